"""Corpus: sparse storage, observable panels, targets, batches and resumable loading."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

from tfmkit.data import keys
from tfmkit.data.collate import PretrainCollator
from tfmkit.data.corpus import Corpus, CorpusBatches, InMemoryStore, make_dataloader
from tfmkit.data.masking import RevealSpec
from tfmkit.data.normalize import lognorm
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError

GENES_A = ["CD3E", "CD4", "CD8A", "MS4A1", "GAPDH", "ACTB", "LYZ", "NKG7"]
GENES_B = ["CD3E", "CD19", "GAPDH", "KIAA0101", "ACTB", "notagene1"]  # KIAA0101 -> PCLAF


def _two(seed=0, n_a=40, n_b=25):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (n_a, len(GENES_A))).astype(np.float32)),
                   obs=pd.DataFrame({"cell_type": ["t"] * n_a}, index=[f"a{i}" for i in range(n_a)]),
                   var=pd.DataFrame(index=GENES_A))
    b = ad.AnnData(rng.poisson(3.0, (n_b, len(GENES_B))).astype(np.float32),
                   obs=pd.DataFrame(index=[f"b{i}" for i in range(n_b)]), var=pd.DataFrame(index=GENES_B))
    return {"A": a, "B": b}


def test_lognorm_matches_scanpy():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(1.0, (30, 50)).astype(np.float32))
    a = ad.AnnData(X.copy())
    sc.pp.normalize_total(a, target_sum=1e5)
    sc.pp.log1p(a)
    np.testing.assert_allclose(lognorm(X, 1e5).toarray(), a.X.toarray(), atol=1e-5)
    np.testing.assert_allclose(lognorm(X.toarray(), 1e5), a.X.toarray(), atol=1e-5)


def test_corpus_construction_sparse_and_panels():
    data = _two()
    c = Corpus.from_adatas(data)
    assert c.names == ["A", "B"] and c.n_cells == 65 and len(c) == 65
    assert all(sp.issparse(X) for X in c.counts)
    assert all(X.shape == (n, c.vocab.n_genes) for X, n in zip(c.counts, (40, 25)))
    assert "PCLAF" in c.vocab and "KIAA0101" not in c.vocab
    assert c.vocab.genes == sorted(set(GENES_A) | {"CD19", "PCLAF", "notagene1"})
    np.testing.assert_array_equal(c.observable[1], np.sort(c.vocab.gene_index(["CD3E", "CD19", "GAPDH", "PCLAF", "ACTB", "notagene1"])))
    assert c.gene_reports["B"].counts["previous"] == 1 and c.gene_reports["B"].counts["unmapped"] == 1
    assert list(data["B"].var_names) == GENES_B  # input untouched
    assert list(c.obs["dataset"]) == ["A"] * 40 + ["B"] * 25 and c.obs["cell_type"].iloc[0] == "t"
    np.testing.assert_array_equal(c.dataset_of_cell, [0] * 40 + [1] * 25)
    # counts preserved under column remapping
    gi = c.vocab.gene_index(GENES_A)
    np.testing.assert_array_equal(c.counts[0].toarray()[:, gi], data["A"].X.toarray())
    # nonzero cells
    m = c.nonzero_cells()
    assert m[c.vocab.gene_index(["CD3E"])[0]] == (data["A"].X[:, 0].toarray() > 0).sum() + (data["B"].X[:, 0] > 0).sum()
    mask = c.observable_mask([0, 1])
    assert mask.shape == (2, c.vocab.n_genes) and not mask[0, c.vocab.gene_index(["CD19"])[0]]


def test_batch_shapes_target_and_observable():
    data = _two()
    c = Corpus.from_adatas(data)
    G = c.vocab.n_genes
    cells = np.array([0, 5, 39, 40, 64])
    b = c.batch(cells, n_revealed=4, generator=torch.Generator().manual_seed(0))
    assert set(b) == {keys.GENE_IDS, keys.VALUES, keys.PADDING, keys.TARGET, keys.OBSERVABLE, keys.COUNTS,
                      keys.REVEALED, keys.LIBRARY_SIZE, keys.DATASET}
    assert b[keys.GENE_IDS].shape == (5, 4) and b[keys.TARGET].shape == (5, G)
    assert b[keys.GENE_IDS].dtype == torch.int64 and b[keys.PADDING].dtype == torch.bool
    # TARGET equals lognorm of each original row (L = 1e5)
    rows = np.vstack([data["A"].X[[0, 5, 39]].toarray()[:, :], np.zeros((2, len(GENES_A)))])
    exp_a = lognorm(data["A"].X[[0, 5, 39]].toarray(), 1e5)
    np.testing.assert_allclose(b[keys.TARGET][:3][:, c.vocab.gene_index(GENES_A)].numpy(), exp_a, atol=1e-5)
    exp_b = lognorm(data["B"].X[[0, 24]], 1e5)
    gi_b = c.vocab.gene_index(["CD3E", "CD19", "GAPDH", "PCLAF", "ACTB", "notagene1"])
    np.testing.assert_allclose(b[keys.TARGET][3:][:, gi_b].numpy(), exp_b, atol=1e-5)
    np.testing.assert_allclose(b[keys.LIBRARY_SIZE].numpy(), rows.sum(1)[:3].tolist() + data["B"].X[[0, 24]].sum(1).tolist())
    # revealed genes: observable only, values/ids consistent, REVEALED mask consistent
    valid = ~b[keys.PADDING]
    gidx = b[keys.GENE_IDS] - GeneVocab.N_SPECIAL
    for r in range(5):
        g = gidx[r][valid[r]]
        assert b[keys.OBSERVABLE][r, g].all()
        assert torch.equal(torch.sort(g).values, torch.nonzero(b[keys.REVEALED][r]).ravel())
        np.testing.assert_allclose(b[keys.VALUES][r][valid[r]], b[keys.TARGET][r, g])
    assert (b[keys.GENE_IDS][~valid] == GeneVocab.PAD).all()
    # a gene absent from dataset A is never observable nor revealed for A's cells
    cd19 = c.vocab.gene_index(["CD19"])[0]
    assert not b[keys.OBSERVABLE][:3, cd19].any() and not b[keys.REVEALED][:3, cd19].any()
    assert (b[keys.COUNTS][:3, cd19] == 0).all() and b[keys.OBSERVABLE][3:, cd19].all()


def test_absent_gene_never_revealed_many_draws():
    c = Corpus.from_adatas(_two(n_a=200, n_b=10))
    b = c.batch(np.arange(200), n_revealed=8, generator=torch.Generator().manual_seed(1))
    only_b = c.vocab.gene_index(["CD19", "PCLAF", "notagene1"])
    assert not b[keys.REVEALED][:, only_b].any()
    assert b[keys.PADDING].sum() == 0  # A observes exactly 8 genes: all revealed
    assert b[keys.REVEALED].sum(1).eq(8).all()


def test_expressed_only_and_library_size_before_vocab_filter():
    data = _two()
    vocab = GeneVocab(["CD3E", "GAPDH", "ACTB"])
    c = Corpus.from_adatas(data, vocab=vocab)
    assert c.n_dropped_outside_vocab == {"A": 5, "B": 3}
    b = c.batch(np.arange(65), n_revealed=3, generator=torch.Generator().manual_seed(0), expressed_only=True)
    revealed_counts = b[keys.COUNTS][b[keys.REVEALED]]
    assert (revealed_counts > 0).all()
    # library size is the total over all the cell's original genes, not the 3 vocab genes
    lib = np.concatenate([np.asarray(data["A"].X.sum(1)).ravel(), data["B"].X.sum(1)])
    np.testing.assert_allclose(b[keys.LIBRARY_SIZE].numpy(), lib)
    np.testing.assert_allclose(b[keys.TARGET].numpy(), np.log1p(1e5 * b[keys.COUNTS].numpy() / lib[:, None]), rtol=1e-5)


def test_validation_and_layers():
    data = _two()
    bad = data["A"].copy()
    bad.X = lognorm(bad.X)
    with pytest.raises(TfmkitError, match="log-normalised"):
        Corpus.from_adatas({"bad": bad})
    bad.layers["counts"] = data["A"].X.copy()
    c = Corpus.from_adatas({"ok": bad}, layer="counts")
    assert c.n_cells == 40
    with pytest.raises(TfmkitError, match="not found"):
        Corpus.from_adatas({"ok": bad}, layer="nope")


def test_inference_corpus_overlap():
    c = Corpus.from_adatas(_two())
    new = ad.AnnData(np.ones((3, 3), dtype=np.float32), var=pd.DataFrame(index=["CD3E", "xx", "yy"]))
    ci = Corpus.from_adata_for_inference(new, c.vocab, allow_low_coverage=True)  # 1 of 11 genes
    assert ci.vocab == c.vocab and ci.n_dropped_outside_vocab == {"input": 2}
    np.testing.assert_allclose(ci.library_sizes, 3.0)  # all input genes count
    none = ad.AnnData(np.ones((3, 2), dtype=np.float32), var=pd.DataFrame(index=["xx", "yy"]))
    with pytest.raises(TfmkitError, match="none of the 2 input genes maps to the model vocabulary"):
        Corpus.from_adata_for_inference(none, c.vocab)
    with pytest.raises(TfmkitError, match="none of the 2 input genes maps to the model vocabulary"):
        Corpus.from_adata_for_inference(none, c.vocab, allow_low_coverage=True)  # zero is never allowed


def test_inference_low_coverage_refused_unless_allowed():
    big = GeneVocab([f"GENE{i}" for i in range(200)] + ["CD3E"])  # CD3E = 1 of 201 genes < 1%
    new = ad.AnnData(np.ones((2, 2), dtype=np.float32), var=pd.DataFrame(index=["CD3E", "xx"]))
    with pytest.raises(TfmkitError, match=r"0.5% of the 201-gene model vocabulary is in the input "
                                          r"\(below 10%\).*--allow-low-coverage"):
        Corpus.from_adata_for_inference(new, big)
    ci = Corpus.from_adata_for_inference(new, big, allow_low_coverage=True)
    assert ci.n_cells == 2 and list(ci.observable[0]) == [200]


def test_pretraining_corpus_refuses_dataset_with_no_mapped_gene():
    data = _two()
    mouse = ad.AnnData(np.ones((4, 3), dtype=np.float32), var=pd.DataFrame(index=["Zzz1", "Qqq2", "Xyz3"]))
    with pytest.raises(TfmkitError, match="mouse: none of the 3 input genes maps to a human HGNC symbol; "
                                          "likely cause: mouse/rat-style symbols"):
        Corpus.from_adatas({**data, "mouse": mouse})
    c = Corpus.from_adatas({**data, "mouse": mouse}, allow_low_coverage=True)
    assert len(c.observable[2]) == 3
    with pytest.raises(TfmkitError, match="mouse: none of the 3 input genes maps to the model vocabulary"):
        Corpus.from_adatas({"mouse": mouse}, vocab=Corpus.from_adatas(data).vocab, allow_low_coverage=True)


def test_split_stratified():
    c = Corpus.from_adatas(_two())
    assert InMemoryStore is Corpus
    tr, va = c.split(0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 65
    assert (c.dataset_of_cell[va] == 0).sum() == 8 and (c.dataset_of_cell[va] == 1).sum() == 5
    tr2, va2 = c.split(0.2, seed=3)
    np.testing.assert_array_equal(va, va2)


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_dataloader_deterministic_and_resumable():
    c = Corpus.from_adatas(_two())
    tr, _ = c.split(0.0, seed=0)
    kw = dict(batch_size=8, seed=11, collate=PretrainCollator(RevealSpec(3)))
    full = _take(make_dataloader(c, tr, **kw), 20)  # steps_per_epoch = 8 -> crosses 2 epochs
    resumed = _take(make_dataloader(c, tr, start_step=13, **kw), 7)
    for a, b in zip(full[13:], resumed):
        assert int(a["step"]) == int(b["step"])
        for k in a:
            assert torch.equal(a[k], b[k]), k
    loader = make_dataloader(c, tr, **kw)
    assert loader.steps_per_epoch == 65 // 8
    ds = loader.dataset
    epoch0 = np.concatenate([ds.cells_for_step(s) for s in range(8)])
    assert len(np.unique(epoch0)) == 64  # each cell at most once per epoch
    np.testing.assert_array_equal(epoch0, tr[np.random.default_rng([11, 0]).permutation(65)][:64])
    assert not np.array_equal(ds.cells_for_step(0), ds.cells_for_step(8))  # epoch 1 reshuffled


def test_dataloader_rank_sharding_and_errors():
    c = Corpus.from_adatas(_two())
    idx = np.arange(c.n_cells)
    col = PretrainCollator(RevealSpec(2))
    r0 = CorpusBatches(c, idx, batch_size=4, seed=0, collate=col, rank=0, world_size=2)
    r1 = CorpusBatches(c, idx, batch_size=4, seed=0, collate=col, rank=1, world_size=2)
    assert r0.steps_per_epoch == r1.steps_per_epoch == 32 // 4
    c0 = np.concatenate([r0.cells_for_step(s) for s in range(8)])
    c1 = np.concatenate([r1.cells_for_step(s) for s in range(8)])
    assert len(np.intersect1d(c0, c1)) == 0 and len(c0) == len(c1) == 32
    with pytest.raises(TfmkitError, match="larger than"):
        CorpusBatches(c, idx[:3], batch_size=4, seed=0, collate=col)
    with pytest.raises(TfmkitError, match=r"rank 2 must be in \[0, world_size=2\)"):
        CorpusBatches(c, idx, batch_size=4, seed=0, collate=col, rank=2, world_size=2)
    with pytest.raises(TfmkitError, match="collate must be a collator"):
        CorpusBatches(c, idx, batch_size=4, seed=0, collate=None)
    no_drop = CorpusBatches(c, idx, batch_size=30, seed=0, collate=col, drop_last=False, shuffle=False)
    assert no_drop.steps_per_epoch == 3 and len(no_drop.cells_for_step(2)) == 5
    np.testing.assert_array_equal(no_drop.cells_for_step(0), np.arange(30))


def test_dataloader_with_worker_matches_main_process():
    c = Corpus.from_adatas(_two())
    kw = dict(batch_size=8, seed=2, collate=PretrainCollator(RevealSpec(3)))
    a = _take(make_dataloader(c, np.arange(65), **kw), 3)
    b = _take(make_dataloader(c, np.arange(65), num_workers=1, **kw), 3)
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k])
