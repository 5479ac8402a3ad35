"""PretrainCollator and the step-seeded loader reproduce the pre-redesign batches bit for bit.

``_frozen_batch`` / ``_frozen_sample_revealed`` / ``_frozen_step_seed`` are verbatim copies of
``Corpus.batch``, ``masking.sample_revealed`` and ``corpus._step_seed`` at commit 5b030dd (before
the data path was split into store -> transforms -> collators). They must never be edited to make
a test pass: TxFM's training batches depend on every bit of them.
"""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import GENES, make_counts

from tfmkit.data import keys
from tfmkit.data.collate import Collator, PretrainCollator
from tfmkit.data.corpus import Corpus, make_dataloader
from tfmkit.data.masking import DEFAULT_N_REVEALED, RevealSpec, frequency_weights
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError


# ---- frozen reference (commit 5b030dd) --------------------------------------------------------
def _frozen_sample_revealed(observable, n_revealed, *, generator, weights=None, expressed=None):
    cand = observable.bool()
    if expressed is not None:
        cand = cand & expressed.bool()
    B, G = cand.shape
    u = torch.rand((B, G), generator=generator, device=cand.device)
    if weights is None:
        scores = u
    else:
        w = torch.as_tensor(weights, dtype=torch.float64, device=cand.device)
        gumbel = -torch.log(-torch.log(u.double().clamp(1e-300, 1.0 - 1e-16)))
        scores = torch.log(w)[None, :] + gumbel
        cand = cand & (w > 0)[None, :]
    scores = scores.masked_fill(~cand, float("-inf"))
    n_cand = cand.sum(dim=1)
    k = int(min(n_revealed, int(n_cand.max()) if B else 0))
    if k == 0:
        empty = torch.zeros((B, 0), dtype=torch.long, device=cand.device)
        return empty, empty.bool()
    top, idx = torch.topk(scores, k, dim=1)
    valid = torch.arange(k, device=cand.device)[None, :] < n_cand[:, None]
    idx = idx.masked_fill(~valid, 0)
    return idx, valid


def _frozen_batch(corpus, cell_idx, *, n_revealed, library_size=1e5, generator, gene_weights=None,
                  expressed_only=False):
    obs_mask = torch.zeros((len(corpus.names), corpus.vocab.n_genes), dtype=torch.bool)
    for d, o in enumerate(corpus.observable):
        obs_mask[d, torch.as_tensor(o)] = True
    cell_idx = np.asarray(cell_idx, dtype=np.int64)
    counts = torch.from_numpy(corpus.dense_counts(cell_idx))
    lib = torch.from_numpy(corpus.library_sizes[cell_idx].astype(np.float32))
    scale = torch.where(lib > 0, library_size / lib.clamp_min(1e-12), torch.zeros_like(lib))
    target = torch.log1p(counts * scale[:, None])
    ds = torch.from_numpy(corpus.dataset_of_cell[cell_idx])
    observable = obs_mask[ds]
    expressed = counts > 0 if expressed_only else None
    idx, valid = _frozen_sample_revealed(observable, n_revealed, generator=generator, weights=gene_weights,
                                         expressed=expressed)
    gene_ids = torch.where(valid, idx + GeneVocab.N_SPECIAL, torch.full_like(idx, GeneVocab.PAD))
    values = target.gather(1, idx) * valid
    revealed = torch.zeros(counts.shape, dtype=torch.int32).scatter_add_(1, idx, valid.int()) > 0
    return {keys.GENE_IDS: gene_ids, keys.VALUES: values, keys.PADDING: ~valid, keys.TARGET: target,
            keys.OBSERVABLE: observable, keys.COUNTS: counts, keys.REVEALED: revealed,
            keys.LIBRARY_SIZE: lib, keys.DATASET: ds}


def _frozen_step_seed(seed, step, rank):
    s = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return int(s[0]) << 31 | int(s[1]) >> 1


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus():
    a = make_counts(50, GENES[:30], seed=1)
    b = make_counts(40, GENES[10:], seed=2)
    c = make_counts(6, GENES[5:12], seed=3)  # a small panel: K > observable genes -> padding
    c.X = sp.csr_matrix(c.X.toarray() * (np.arange(6)[:, None] > 0))  # cell 0 of c has no counts
    return Corpus.from_adatas({"a": a, "b": b, "c": c})


def _assert_same(new, ref):
    assert list(new) == list(ref)
    for k in ref:
        assert new[k].dtype == ref[k].dtype and new[k].shape == ref[k].shape, k
        assert torch.equal(new[k], ref[k]), k


CELLS = np.array([0, 7, 49, 50, 60, 89, 90, 91, 95, 3])
SPECS = {  # name -> (RevealSpec, library size)
    "uniform": (RevealSpec(12), 1e5),
    "tau_weighted": (RevealSpec(12, tau=0.7), 1e4),
    "tau_negative": (RevealSpec(5, tau=-1.0), 1e5),
    "expressed_only": (RevealSpec(12, expressed_only=True), 1e5),
    "k_above_panels": (RevealSpec(40), 1e5),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_pretrain_collator_equals_frozen_batch(corpus, name):
    spec, L = SPECS[name]
    collate = PretrainCollator.for_store(corpus, spec, library_size=L)
    weights = frequency_weights(corpus.nonzero_cells(), spec.tau) if spec.tau else None
    for seed in (0, 1, 2):
        new = collate(corpus, CELLS, torch.Generator().manual_seed(seed))
        ref = _frozen_batch(corpus, CELLS, n_revealed=spec.n_revealed, library_size=L,
                            generator=torch.Generator().manual_seed(seed), gene_weights=weights,
                            expressed_only=spec.expressed_only)
        _assert_same(new, ref)
        assert tuple(new) == collate.fields == keys.PRETRAIN_FIELDS
    # the backward-compatible wrapper gives the same batch
    old_api = corpus.batch(CELLS, n_revealed=spec.n_revealed, library_size=L, gene_weights=weights,
                           expressed_only=spec.expressed_only, generator=torch.Generator().manual_seed(2))
    _assert_same(old_api, ref)


def test_padding_and_zero_library_cell(corpus):
    b = PretrainCollator(RevealSpec(40))(corpus, np.array([0, 90, 91]), torch.Generator().manual_seed(0))
    assert b[keys.GENE_IDS].shape == (3, 30)  # K = min(40, max #observable in the batch = 30)
    assert (~b[keys.PADDING]).sum(1).tolist() == [30, 7, 7]  # dataset c observes 7 genes: all revealed
    assert (b[keys.GENE_IDS][1:, 7:] == GeneVocab.PAD).all() and (b[keys.VALUES][1:, 7:] == 0).all()
    assert b[keys.LIBRARY_SIZE][1] == 0 and (b[keys.TARGET][1] == 0).all()  # lib = 0 -> target 0


@pytest.mark.parametrize("rank,world,tau", [(0, 1, 0.0), (1, 2, 0.5)])
def test_loader_steps_equal_frozen_seeding(corpus, rank, world, tau):
    spec = RevealSpec(6, tau=tau)
    weights = frequency_weights(corpus.nonzero_cells(), tau) if tau else None
    loader = make_dataloader(corpus, np.arange(90), batch_size=8, seed=5, rank=rank, world_size=world,
                             collate=PretrainCollator.for_store(corpus, spec), start_step=3)
    it = iter(loader)
    for step in range(3, 9):
        got = next(it)
        assert int(got.pop(keys.STEP)) == step
        cells = loader.dataset.cells_for_step(step)
        ref = _frozen_batch(corpus, cells, n_revealed=6, gene_weights=weights,
                            generator=torch.Generator().manual_seed(_frozen_step_seed(5, step, rank)))
        _assert_same(got, ref)


def test_collator_protocol_and_errors(corpus):
    col = PretrainCollator(RevealSpec())
    assert isinstance(col, Collator) and col.reveal.n_revealed == DEFAULT_N_REVEALED == 256
    assert PretrainCollator.for_store(corpus, RevealSpec(tau=0.0)).gene_weights is None
    w = PretrainCollator.for_store(corpus, RevealSpec(tau=1.0)).gene_weights
    torch.testing.assert_close(w, frequency_weights(corpus.nonzero_cells(), 1.0))
    with pytest.raises(TfmkitError, match=r"reveal tau=0.5 needs gene weights; build the collator with"):
        PretrainCollator(RevealSpec(tau=0.5))
    with pytest.raises(TfmkitError, match="needs a RevealSpec, got int"):
        PretrainCollator(16)
    with pytest.raises(TfmkitError, match="library_size must be > 0"):
        PretrainCollator(RevealSpec(), library_size=0)
    with pytest.raises(TfmkitError, match=r"cell indices must be a 1-D array in \[0, 96\)"):
        col(corpus, [0, 96], torch.Generator())
    with pytest.raises(TfmkitError, match=r"cell indices must be a 1-D array"):
        col(corpus, [[0, 1]], torch.Generator())


def test_collator_on_any_count_store():
    """A store other than Corpus (here: a minimal dense one) works with the same collator."""

    class DenseStore:
        def __init__(self, X, lib):
            self.vocab, self.names, self.n_cells = GeneVocab(GENES[:4]), ["d"], X.shape[0]
            self.observable, self.library_sizes = [np.arange(4)], lib
            self.dataset_of_cell = np.zeros(X.shape[0], np.int64)
            self.obs, self._X = pd.DataFrame(index=[str(i) for i in range(X.shape[0])]), X

        def dense_counts(self, cell_idx):
            return self._X[np.asarray(cell_idx)].astype(np.float32)

        def observable_mask(self, dataset_ids):
            return torch.ones((len(dataset_ids), 4), dtype=torch.bool)

        def nonzero_cells(self):
            return (self._X > 0).sum(0)

        def split(self, val_fraction, seed):
            return np.arange(self.n_cells), np.zeros(0, np.int64)

    X = np.array([[1, 0, 3, 0], [2, 2, 0, 4]], dtype=np.float32)
    store = DenseStore(X, np.array([8.0, 8.0]))
    ref = Corpus.from_adatas({"d": ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=GENES[:4]))},
                             vocab=store.vocab)
    ref.library_sizes = np.array([8.0, 8.0])
    col = PretrainCollator(RevealSpec(3), library_size=10.0)
    a = col(store, [0, 1], torch.Generator().manual_seed(4))
    _assert_same(a, col(ref, [0, 1], torch.Generator().manual_seed(4)))
    np.testing.assert_allclose(a[keys.TARGET].numpy(), np.log1p(10.0 * X / 8.0), rtol=1e-6)


def _cell_tokens(batch, row):
    """{gene id: value} of one cell's valid tokens."""
    ok = ~batch[keys.PADDING][row]
    return dict(zip(batch[keys.GENE_IDS][row][ok].tolist(), batch[keys.VALUES][row][ok].tolist()))


@pytest.mark.parametrize("spec", [RevealSpec(5), RevealSpec(5, expressed_only=True, zero_fraction=0.2)])
def test_per_cell_generators_give_each_cell_the_same_tokens_in_any_batch(corpus, spec):
    col = PretrainCollator(spec)
    assert col.per_cell_generators
    cells = [3, 60, 91, 10]
    gens = lambda: [torch.Generator().manual_seed(100 + c) for c in cells]  # noqa: E731
    full = col(corpus, cells, gens())
    rev = col(corpus, cells[::-1], gens()[::-1])
    for i, c in enumerate(cells):
        alone = col(corpus, [c], [torch.Generator().manual_seed(100 + c)])
        assert _cell_tokens(full, i) == _cell_tokens(alone, 0) == _cell_tokens(rev, len(cells) - 1 - i)
        assert torch.equal(full[keys.REVEALED][i], alone[keys.REVEALED][0])


def test_zero_fraction_batch_reveals_expressed_then_zeros(corpus):
    col = PretrainCollator(RevealSpec(10, expressed_only=True, zero_fraction=0.2))
    b = col(corpus, np.arange(90), torch.Generator().manual_seed(0))
    counts, rev, obs = b[keys.COUNTS], b[keys.REVEALED], b[keys.OBSERVABLE]
    assert not (rev & ~obs).any()
    n_e = (rev & (counts > 0)).sum(1)
    n_z = (rev & (counts == 0)).sum(1)
    n_expr, n_zero = ((counts > 0) & obs).sum(1), ((counts == 0) & obs).sum(1)
    assert torch.equal(n_e, torch.clamp(n_expr, max=8))  # ceil(0.8 * 10) expressed slots
    assert torch.equal(n_z, torch.minimum(torch.round(n_e * 0.25).long(), n_zero))


def test_per_cell_wrapper_stacks_single_cell_rows_and_pads_sequences(corpus):
    from tfmkit.data.collate_ar import AutoregressiveCollator
    from tfmkit.data.per_cell import PerCellCollator, per_cell

    inner = AutoregressiveCollator(12, order="random")
    wrapped = per_cell(inner)
    assert isinstance(wrapped, PerCellCollator) and wrapped.per_cell_generators and wrapped.fields == inner.fields
    assert per_cell(PretrainCollator(RevealSpec(5))).__class__ is PretrainCollator  # already per cell
    cells = [91, 3, 60]  # 91: the small panel (short sequence) -> padded in the stack
    gens = lambda: [torch.Generator().manual_seed(7 + c) for c in cells]  # noqa: E731
    got = wrapped(corpus, cells, gens())
    for i, c in enumerate(cells):
        alone = inner(corpus, [c], torch.Generator().manual_seed(7 + c))
        t = alone[keys.GENE_IDS].shape[1]
        for k in alone:
            row = got[k][i : i + 1]
            if row.dim() >= 2 and k in (keys.GENE_IDS, keys.VALUES, keys.PADDING, "ranks"):
                assert torch.equal(row[:, :t], alone[k]), k
                assert (row[:, t:] == (True if k == keys.PADDING else 0)).all(), k  # right padding
            else:
                assert torch.equal(row, alone[k]), k
    lengths = [int((~got[keys.PADDING][i]).sum()) for i in range(3)]
    assert len(set(lengths)) > 1  # the case above did pad
    # one generator (training): the inner collator unchanged
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _assert_same(wrapped(corpus, cells, g1), inner(corpus, cells, g2))
    with pytest.raises(ValueError, match="2 generators for 3 cells"):
        wrapped(corpus, cells, gens()[:2])
