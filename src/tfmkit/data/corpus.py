"""A sparse multi-dataset training corpus aligned to one :class:`GeneVocab` (SPEC §2), and
the step-seeded loader of batches.

Each dataset keeps its own gene panel: a gene the dataset did not measure is *unobservable*
for its cells (unknown, not zero). Counts stay in per-dataset CSR matrices whose columns are
vocabulary gene indices; only the cells of one batch are ever densified. :class:`Corpus` is the
in-memory implementation of :class:`tfmkit.data.store.CountStore` (alias ``InMemoryStore``);
batches are built by a collator (:mod:`tfmkit.data.collate`), e.g. TxFM's
:class:`~tfmkit.data.collate.PretrainCollator`, and served by :func:`make_dataloader`.
"""

from __future__ import annotations

import itertools
import sys
from typing import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tfmkit.data import keys
from tfmkit.data.collate import Collator, PretrainCollator
from tfmkit.data.hgnc import harmonize_genes
from tfmkit.data.masking import RevealSpec
from tfmkit.data.normalize import DEFAULT_LIBRARY_SIZE
from tfmkit.data.store import CountStore
from tfmkit.data.validate import validate_counts
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError

DEFAULT_WINDOW_BLOCKS = 16
"""Blocks whose cells are mixed together under block shuffling (see :class:`CorpusBatches`)."""


def _counts_adata(adata: ad.AnnData, layer: str | None) -> ad.AnnData:
    """A light AnnData whose X is the counts to use (``layer``, ``raw`` or X); no data copy."""
    if layer is None:
        X, var = adata.X, adata.var
    elif layer in adata.layers:
        X, var = adata.layers[layer], adata.var
    elif layer == "raw" and adata.raw is not None:
        X, var = adata.raw.X, adata.raw.var
    else:
        avail = sorted(adata.layers.keys()) + (["raw"] if adata.raw is not None else [])
        raise TfmkitError(f"layer {layer!r} not found; available layers: {avail or 'none'} (omit --layer to use X).")
    return ad.AnnData(X=X, obs=pd.DataFrame(index=adata.obs_names), var=var.copy())


def _check_genes_map(name: str, a: ad.AnnData, vocab: GeneVocab, vocab_given: bool,
                     allow_low_coverage: bool) -> None:
    """Print how many of the dataset's genes mapped and warn / refuse on low coverage
    (:mod:`tfmkit.data.coverage`): against the model vocabulary when one was given, else
    against HGNC (building a vocabulary for pretraining)."""
    from tfmkit.data.coverage import check_coverage, gene_coverage

    names = a.var["original_symbol"] if "original_symbol" in a.var else a.var_names
    in_vocab = vocab.gene_index(a.var_names) >= 0
    if vocab_given:
        rep = gene_coverage(names, int(in_vocab.sum()), vocab.n_genes, mapped=in_vocab, source=name)
    elif not in_vocab.any():  # nothing of this dataset made it into the vocabulary
        rep = gene_coverage(names, 0, vocab.n_genes, mapped=in_vocab, source=name)
    else:
        m = a.var["hgnc_status"].astype(str).to_numpy() != "unmapped"
        rep = gene_coverage(names, int(m.sum()), None, mapped=m, source=name)
        if allow_low_coverage and not m.any():  # e.g. a mouse corpus: its own names are the vocabulary
            print(f"warning: {name}: no gene maps to a human HGNC symbol; keeping the file's gene "
                  "names as they are (allow_low_coverage)", file=sys.stderr)
            return
    check_coverage(rep, allow_low_coverage=allow_low_coverage)


def _row_totals(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()


class Corpus:
    """Counts of several datasets, aligned to one vocabulary, stored sparse.

    Attributes
    ----------
    vocab : GeneVocab
    names : list[str]
        Dataset names, in order (dataset id = position).
    counts : list[scipy.sparse.csr_matrix]
        Per dataset ``(n_cells_d, vocab.n_genes)`` float32 raw counts.
    observable : list[np.ndarray]
        Per dataset, sorted vocabulary gene indices the dataset measured.
    library_sizes : np.ndarray
        ``(n_cells,)`` total counts of each cell over ALL its genes in the original dataset
        (before vocabulary filtering), the denominator of library-size normalisation.
    dataset_of_cell, row_of_cell : np.ndarray
        ``(n_cells,)`` dataset id and row within that dataset of each global cell index.
    obs : pandas.DataFrame
        Concatenated ``obs`` with a ``dataset`` column (overwritten with the corpus names).
    gene_reports : dict[str, GeneReport]
        HGNC harmonisation reports for datasets harmonised by the corpus itself.
    n_dropped_outside_vocab : dict[str, int]
        Number of genes of each dataset not in the vocabulary (dropped).
    """

    def __init__(self, vocab: GeneVocab, names, counts, observable, library_sizes, obs,
                 gene_reports=None, n_dropped_outside_vocab=None):
        self.vocab = vocab
        self.names = list(names)
        self.counts = [sp.csr_matrix(c, dtype=np.float32) for c in counts]
        self.observable = [np.asarray(o, dtype=np.int64) for o in observable]
        sizes = [c.shape[0] for c in self.counts]
        self.n_cells = int(sum(sizes))
        self.dataset_of_cell = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
        self.row_of_cell = np.concatenate([np.arange(n) for n in sizes]).astype(np.int64) if sizes else np.zeros(0, np.int64)
        self.library_sizes = np.asarray(library_sizes, dtype=np.float64)
        self.obs = obs
        self.gene_reports = dict(gene_reports or {})
        self.n_dropped_outside_vocab = dict(n_dropped_outside_vocab or {})
        mask = torch.zeros((len(self.names), vocab.n_genes), dtype=torch.bool)  # (D, G)
        for d, o in enumerate(self.observable):
            mask[d, torch.as_tensor(o)] = True
        self._observable_mask = mask
        self._nonzero_cells = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_adatas(cls, adatas, *, vocab: GeneVocab | None = None, min_cells: int = 1,
                    layer: str | None = None, bulk: bool = False, validate: bool = True,
                    library_key: str | None = None, allow_low_coverage: bool = False) -> "Corpus":
        """Build a corpus from AnnDatas (a mapping name -> AnnData, or a sequence named
        ``dataset0, dataset1, ...``) holding raw counts in ``X`` or ``layers[layer]``.

        Genes are HGNC-harmonised first unless ``var`` already has ``hgnc_status`` (the input
        is never modified). ``vocab`` defaults to :meth:`GeneVocab.from_adatas` with
        ``min_cells``. ``library_key`` names an ``obs`` column of per-cell total counts to use
        as library sizes (for files that kept only a gene subset, e.g. ``n_counts``);
        otherwise the row sums of all the dataset's genes are used.

        Raises :class:`TfmkitError` for a dataset none of whose genes is in the vocabulary, or
        (unless ``allow_low_coverage``) none of whose genes maps to an HGNC symbol (e.g. mouse
        symbols, a wrong identifier column): such a dataset would train or embed on nothing.
        """
        if isinstance(adatas, ad.AnnData):
            adatas = [adatas]
        items = list(adatas.items()) if isinstance(adatas, Mapping) else [(f"dataset{i}", a) for i, a in enumerate(adatas)]
        if not items:
            raise TfmkitError("no datasets given; pass at least one AnnData.")
        prepared, reports, totals = [], {}, []
        vocab_given = vocab is not None
        for name, adata in items:
            a = _counts_adata(adata, layer)
            if validate:
                where = "X" if layer is None else "adata.raw" if layer == "raw" else f"layers[{layer!r}]"
                validate_counts(a.X, name=where, bulk=bulk, adata=adata, layer=layer, source=str(name))
            if library_key is not None:
                if library_key not in adata.obs:
                    raise TfmkitError(f"dataset {name!r} has no obs column {library_key!r} for library sizes.")
                totals.append(adata.obs[library_key].to_numpy(np.float64))
            else:
                totals.append(_row_totals(a.X))
            if "hgnc_status" not in a.var:
                rep = harmonize_genes(a, copy=False)
                reports[name] = rep
            prepared.append((str(name), a))
        if vocab is None:
            vocab = GeneVocab.from_adatas([a for _, a in prepared], min_cells=min_cells)
        counts, observable, dropped = [], [], {}
        for name, a in prepared:
            gi = vocab.gene_index(a.var_names)
            keep = np.flatnonzero(gi >= 0)
            _check_genes_map(name, a, vocab, vocab_given, allow_low_coverage)
            dropped[name] = int(len(gi) - len(keep))
            X = sp.csr_matrix(a.X)[:, keep]
            X = sp.csr_matrix((X.data.astype(np.float32), gi[keep][X.indices], X.indptr), shape=(a.n_obs, vocab.n_genes))
            X.sort_indices()
            X.eliminate_zeros()
            counts.append(X)
            observable.append(np.sort(gi[keep]))
        obs = []
        for (name, _), (_, adata) in zip(prepared, items):
            o = adata.obs.copy()
            o["dataset"] = name
            obs.append(o)
        obs = pd.concat(obs, axis=0)
        if obs.index.has_duplicates:
            obs.index = [f"{d}:{i}" for d, i in zip(obs["dataset"], obs.index)]
        obs["dataset"] = pd.Categorical(obs["dataset"], categories=[n for n, _ in prepared])
        return cls(vocab, [n for n, _ in prepared], counts, observable, np.concatenate(totals), obs,
                   gene_reports=reports, n_dropped_outside_vocab=dropped)

    @classmethod
    def from_adata_for_inference(cls, adata: ad.AnnData, vocab: GeneVocab, *, layer: str | None = None,
                                 bulk: bool = False, name: str = "input", library_key: str | None = None,
                                 allow_low_coverage: bool = False) -> "Corpus":
        """One-dataset corpus of new data aligned to an existing model vocabulary.

        Genes outside the vocabulary are dropped (count in ``n_dropped_outside_vocab``); the
        number of mapped genes is printed and low coverage of the vocabulary warns or is refused
        unless ``allow_low_coverage`` (:func:`tfmkit.data.coverage.check_coverage`). Library sizes
        use all the input's genes.
        """
        return cls.from_adatas({name: adata}, vocab=vocab, layer=layer, bulk=bulk, library_key=library_key,
                               allow_low_coverage=allow_low_coverage)

    # ---- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"Corpus({self.n_cells} cells, {len(self.names)} datasets {self.names}, {self.vocab.n_genes} genes)"

    def summary(self) -> str:
        """One line per dataset: cells, observable genes, genes dropped outside the vocabulary."""
        lines = []
        for d, name in enumerate(self.names):
            lines.append(f"{name}: {self.counts[d].shape[0]} cells, {len(self.observable[d])} observable genes, "
                         f"{self.n_dropped_outside_vocab.get(name, 0)} genes outside the vocabulary dropped")
        return "\n".join(lines)

    def nonzero_cells(self) -> np.ndarray:
        """``(G,)`` int64: number of corpus cells where each vocabulary gene is nonzero (``m_i``)."""
        if self._nonzero_cells is None:
            m = np.zeros(self.vocab.n_genes, dtype=np.int64)
            for X in self.counts:
                m += np.bincount(X.indices[X.data != 0], minlength=self.vocab.n_genes)
            self._nonzero_cells = m
        return self._nonzero_cells

    def observable_mask(self, dataset_ids) -> torch.Tensor:
        """``(B, G)`` bool: genes measured by the dataset of each entry of ``dataset_ids``."""
        if not isinstance(dataset_ids, torch.Tensor):
            dataset_ids = torch.as_tensor(np.asarray(dataset_ids))
        return self._observable_mask[dataset_ids.long()]  # (B, G)

    def dense_counts(self, cell_idx) -> np.ndarray:
        """``(B, G)`` float32 counts of the given global cells (only these rows densified)."""
        cell_idx = np.asarray(cell_idx, dtype=np.int64)
        out = np.zeros((len(cell_idx), self.vocab.n_genes), dtype=np.float32)  # (B, G)
        ds = self.dataset_of_cell[cell_idx]
        rows = self.row_of_cell[cell_idx]
        for d in np.unique(ds):
            sel = np.flatnonzero(ds == d)
            out[sel] = self.counts[d][rows[sel]].toarray()
        return out

    def batch(self, cell_idx, *, n_revealed: int, library_size: float = DEFAULT_LIBRARY_SIZE,
              generator: torch.Generator | None, gene_weights=None, expressed_only: bool = False) -> dict:
        """TxFM pretraining batch of the cells ``cell_idx`` (global indices); see :mod:`tfmkit.data.keys`.

        Backward-compatible shorthand for ``PretrainCollator(RevealSpec(n_revealed,
        expressed_only=expressed_only), library_size, gene_weights)(self, cell_idx, generator)``
        (:class:`tfmkit.data.collate.PretrainCollator`); ``gene_weights`` ``(G,)`` are used as given.
        """
        spec = RevealSpec(n_revealed=n_revealed, expressed_only=expressed_only)
        return PretrainCollator(spec, library_size, gene_weights=gene_weights)(self, cell_idx, generator)

    def split(self, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Random train/validation split of global cell indices, stratified by dataset
        (``round(val_fraction * n_d)`` validation cells from each dataset). Sorted arrays."""
        if not 0 <= val_fraction < 1:
            raise TfmkitError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        train, val = [], []
        for d in range(len(self.names)):
            cells = np.flatnonzero(self.dataset_of_cell == d)
            perm = np.random.default_rng([seed, d]).permutation(cells)
            n_val = int(round(val_fraction * len(cells)))
            val.append(perm[:n_val])
            train.append(perm[n_val:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


InMemoryStore = Corpus
"""The in-memory CSR :class:`~tfmkit.data.store.CountStore` (the name used by store-generic code)."""


def _step_seed(seed: int, step: int, rank: int) -> int:
    s = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return int(s[0]) << 31 | int(s[1]) >> 1


class CorpusBatches(Dataset):
    """Map-style dataset whose item ``global_step`` is a whole batch dict built by ``collate``.

    Epoch ``e`` visits ``cell_indices`` in the order ``np.random.default_rng([seed, e])
    .permutation`` (identity when ``shuffle=False``); rank ``r`` of ``world_size`` takes
    ``perm[r::world_size]`` truncated to equal length. Step ``s`` is batch ``s %
    steps_per_epoch`` of epoch ``s // steps_per_epoch``, and the generator handed to
    ``collate`` is seeded from ``(seed, s, rank)``: any step is reproducible on its own, so
    resuming at ``start_step`` gives exactly the batches of an uninterrupted run.

    **Block shuffling** (``block_size > 1``; default: the store's ``shuffle_block``, 1 for the
    in-memory store, whose order above is unchanged): ``cell_indices`` are cut into runs of
    cells of one read block (the store's ``block_ids(cells)``, else ``cell // block_size``),
    the runs are permuted with ``rng([seed, e])``, rank ``r``
    takes the ``r``-th contiguous share of that sequence, and cells are shuffled within windows
    of ``window_blocks`` runs with ``rng([seed, e, r])``. A batch then touches at most
    ``window_blocks`` blocks, which an on-disk store reads once per window. Still a pure
    function of ``(seed, e, r)``: exact resume, and the batches do not depend on
    ``num_workers``. Every epoch, ranks x workers see each cell at most once; only the
    ``len(cell_indices) % (world_size * batch_size)`` cells of the remainder are left out
    (with ``drop_last``).
    """

    def __init__(self, store: CountStore, cell_indices, *, batch_size: int, seed: int, collate: Collator,
                 shuffle: bool = True, drop_last: bool = True, rank: int = 0, world_size: int = 1,
                 block_size: int | None = None, window_blocks: int = DEFAULT_WINDOW_BLOCKS):
        if seed < 0:
            raise TfmkitError(f"seed must be non-negative, got {seed}.")
        if not 0 <= rank < world_size:
            raise TfmkitError(f"rank {rank} must be in [0, world_size={world_size}).")
        if batch_size < 1:
            raise TfmkitError(f"batch_size must be >= 1, got {batch_size}.")
        if not callable(collate):
            raise TfmkitError(f"collate must be a collator (store, cell_idx, generator) -> dict, got {collate!r}.")
        self.store, self.collate = store, collate
        self.cell_indices = np.asarray(cell_indices, dtype=np.int64)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.shuffle, self.drop_last, self.rank, self.world_size = shuffle, drop_last, rank, world_size
        self.block_size = int(block_size if block_size is not None else getattr(store, "shuffle_block", 1))
        self.window_blocks = int(window_blocks)
        if self.block_size < 1 or self.window_blocks < 1:
            raise TfmkitError(f"block_size ({self.block_size}) and window_blocks ({self.window_blocks}) must be >= 1.")
        self.cells_per_rank = len(self.cell_indices) // world_size
        n = self.cells_per_rank
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        if self.steps_per_epoch == 0:
            raise TfmkitError(
                f"batch_size {batch_size} is larger than the {n} training cells per rank; lower batch_size."
            )
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        """Steps in one epoch (the loader itself repeats epochs forever)."""
        return self.steps_per_epoch

    def epoch_cells(self, epoch: int) -> np.ndarray:
        """This rank's cells of epoch ``epoch`` in visiting order."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            cells = self.cell_indices
            if self.shuffle and self.block_size > 1:
                cells = self._block_shuffled(epoch)
            else:
                if self.shuffle:
                    cells = cells[np.random.default_rng([self.seed, epoch]).permutation(len(cells))]
                cells = cells[self.rank::self.world_size][: self.cells_per_rank]
            self._epoch_cache = (epoch, cells)
        return self._epoch_cache[1]

    def _block_shuffled(self, epoch: int) -> np.ndarray:
        """This rank's cells of ``epoch`` under block shuffling (see the class doc)."""
        n, b = len(self.cell_indices), self.block_size
        block_ids = getattr(self.store, "block_ids", None)  # runs = the store's own read blocks
        ids = block_ids(self.cell_indices) if block_ids is not None else self.cell_indices // b
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ids) != 0) + 1]).astype(np.int64)
        lengths = np.diff(np.concatenate([starts, [n]]))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(starts))
        s, ln = starts[order], lengths[order]
        pos = np.repeat(s - np.concatenate([[0], np.cumsum(ln)[:-1]]), ln) + np.arange(n)  # (n,)
        mine = pos[self.rank * self.cells_per_rank:(self.rank + 1) * self.cells_per_rank]
        window = np.arange(len(mine)) // (b * self.window_blocks)
        u = np.random.default_rng([self.seed, epoch, self.rank]).random(len(mine))
        return self.cell_indices[mine[np.lexsort((u, window))]]

    def cells_for_step(self, step: int) -> np.ndarray:
        """Global cell indices of batch ``step``."""
        epoch, j = divmod(int(step), self.steps_per_epoch)
        return self.epoch_cells(epoch)[j * self.batch_size:(j + 1) * self.batch_size]

    def generator_for_step(self, step: int) -> torch.Generator:
        """The CPU generator of batch ``step``, seeded from ``(seed, step, rank)``."""
        return torch.Generator().manual_seed(_step_seed(self.seed, int(step), self.rank))

    def __getitem__(self, step: int) -> dict:
        out = self.collate(self.store, self.cells_for_step(step), self.generator_for_step(step))
        out[keys.STEP] = torch.tensor(int(step), dtype=torch.long)  # ()
        return out


class _StepSampler(Sampler):
    """Yields global steps ``start, start + 1, ...`` forever."""

    def __init__(self, start: int):
        self.start = int(start)

    def __iter__(self):
        return itertools.count(self.start)


def make_dataloader(store: CountStore, cell_indices, *, batch_size: int, seed: int, collate: Collator,
                    shuffle: bool = True, drop_last: bool = True, start_step: int = 0, rank: int = 0,
                    world_size: int = 1, num_workers: int = 0, block_size: int | None = None,
                    window_blocks: int = DEFAULT_WINDOW_BLOCKS) -> DataLoader:
    """Infinite, resumable DataLoader of batch dicts starting at global step ``start_step``.

    Items are whole batches built by ``collate`` (a :class:`~tfmkit.data.collate.Collator`,
    e.g. :class:`~tfmkit.data.collate.PretrainCollator`) from ``store``; see
    :class:`CorpusBatches` for the visiting order and per-step seeding. The training loop
    decides when to stop. The loader's ``steps_per_epoch`` gives the epoch length. Each batch
    dict also carries ``keys.STEP`` (``"step"``, its global step, a 0-d int64 tensor).
    ``block_size`` / ``window_blocks`` select block shuffling (default: the store's
    ``shuffle_block``; 1 = full permutation). With ``num_workers`` workers, steps go round-robin
    to workers (each worker builds whole batches), so workers x ranks partition every epoch.
    """
    ds = CorpusBatches(store, cell_indices, batch_size=batch_size, seed=seed, collate=collate,
                       shuffle=shuffle, drop_last=drop_last, rank=rank, world_size=world_size,
                       block_size=block_size, window_blocks=window_blocks)
    loader = DataLoader(ds, batch_size=None, sampler=_StepSampler(start_step), num_workers=num_workers)
    loader.steps_per_epoch = ds.steps_per_epoch
    return loader
