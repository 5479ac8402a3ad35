"""Shared machinery of the on-disk count stores: rows read in cached blocks (issue 13 item 1).

An on-disk store (:class:`~tfmkit.data.stores.backed_h5ad.H5adStore`,
:class:`~tfmkit.data.stores.sharded.ShardedStore`, :class:`~tfmkit.data.stores.soma.SomaStore`)
keeps in RAM only what is ``O(cells)`` small — library sizes, dataset ids, per-gene statistics —
and reads counts of a batch's cells on demand. Reads go through fixed blocks of
``block_cells`` consecutive rows of one dataset, held in a small byte-bounded LRU cache per
process, so that a block-shuffled loader (:class:`tfmkit.data.corpus.CorpusBatches` with
``block_size > 1``) reads each block once per window instead of once per cell.

Subclasses implement :meth:`RowStore._read_block`, returning the rows as CSR whose columns are
*stored* column numbers; :attr:`RowStore.colmaps` maps them to vocabulary gene indices (``-1`` =
not in the vocabulary, dropped). Values are identical to those of the in-memory
:class:`~tfmkit.data.corpus.Corpus` built from the same files (tests compare the two).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError

DEFAULT_BLOCK_CELLS = 256
"""Cells per read block (and the loader's shuffle block): ~3.5 MB of BALF-like counts."""
DEFAULT_CACHE_MB = 128.0
"""Per-process cache of decoded blocks: one shuffle window (16 blocks, ~55 MB of BALF-like
counts) and the next; an LRU cache smaller than the window would re-read every block."""


def stratified_split(dataset_of_cell: np.ndarray, n_datasets: int, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split of :meth:`tfmkit.data.corpus.Corpus.split` (same draws, same result):
    ``round(val_fraction * n_d)`` validation cells from each dataset, sorted arrays."""
    if not 0 <= val_fraction < 1:
        raise TfmkitError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    train, val = [], []
    for d in range(n_datasets):
        cells = np.flatnonzero(dataset_of_cell == d)
        perm = np.random.default_rng([seed, d]).permutation(cells)
        n_val = int(round(val_fraction * len(cells)))
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def remap_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, colmap: np.ndarray,
              n_genes: int) -> sp.csr_matrix:
    """CSR rows with stored columns mapped through ``colmap`` (``-1`` dropped), no stored zeros."""
    indptr = np.asarray(indptr, dtype=np.int64)
    indptr = indptr - indptr[0]
    cols = colmap[np.asarray(indices, dtype=np.int64)]
    keep = (cols >= 0) & (np.asarray(data) != 0)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    counts = np.bincount(rows[keep], minlength=len(indptr) - 1)
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # column order within a row is left as stored (densifying does not need it sorted; sorting
    # cost more than the read itself on 20k-gene rows)
    return sp.csr_matrix((np.asarray(data, dtype=np.float32)[keep], cols[keep].astype(np.int32), new_ptr),
                         shape=(len(indptr) - 1, n_genes))


class RowStore:
    """Base of the block-reading :class:`~tfmkit.data.store.CountStore` implementations.

    Parameters
    ----------
    vocab
        Vocabulary the store is aligned to.
    names
        Dataset names (dataset id = position).
    n_rows
        Cells of each dataset; dataset ``d`` owns global cells ``offsets[d]:offsets[d+1]``.
    colmaps
        Per dataset, ``(n_stored_columns,)`` int64 vocabulary index of each stored column (-1 =
        dropped). The observable genes of dataset ``d`` are its mapped columns.
    library_sizes
        ``(n_cells,)`` total counts of each cell over all its file's genes.
    nonzero_cells
        ``(G,)`` number of cells where each vocabulary gene is nonzero.
    block_cells, cache_mb
        Read-block size (rows) and the per-process block-cache budget (MB).
    """

    shuffle_block: int = DEFAULT_BLOCK_CELLS

    def __init__(self, vocab: GeneVocab, names, n_rows, colmaps, library_sizes, nonzero_cells, *,
                 block_cells: int = DEFAULT_BLOCK_CELLS, cache_mb: float = DEFAULT_CACHE_MB):
        if block_cells < 1:
            raise TfmkitError(f"block_cells must be >= 1, got {block_cells}.")
        self.vocab = vocab
        self.names = [str(n) for n in names]
        self.n_rows = np.asarray(n_rows, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.n_rows)]).astype(np.int64)
        self.n_cells = int(self.offsets[-1])
        self.colmaps = [np.asarray(c, dtype=np.int64) for c in colmaps]
        self.observable = [np.unique(c[c >= 0]) for c in self.colmaps]
        self.library_sizes = np.asarray(library_sizes, dtype=np.float64)
        if self.library_sizes.shape != (self.n_cells,):
            raise TfmkitError(f"library sizes have shape {self.library_sizes.shape}, expected ({self.n_cells},).")
        self.dataset_of_cell = np.repeat(np.arange(len(self.names)), self.n_rows).astype(np.int64)
        self._nonzero = np.asarray(nonzero_cells, dtype=np.int64)
        self.block_cells = int(block_cells)
        self.shuffle_block = int(block_cells)
        self.cache_bytes = int(cache_mb * 2**20)
        mask = torch.zeros((len(self.names), vocab.n_genes), dtype=torch.bool)  # (D, G)
        for d, o in enumerate(self.observable):
            mask[d, torch.as_tensor(o)] = True
        self._observable_mask = mask
        self._obs = None
        self._cache: OrderedDict = OrderedDict()
        self._cached_bytes = 0
        self._handles: dict = {}
        self._pid = os.getpid()

    # ---- subclass hooks ----------------------------------------------------------------
    def _read_block(self, d: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, data)`` of rows ``lo:hi`` of dataset ``d`` (stored columns)."""
        raise NotImplementedError

    def _read_obs(self, d: int) -> pd.DataFrame:
        """Per-cell metadata of dataset ``d`` (``n_rows[d]`` rows)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Forget open file handles (after a fork they belong to the parent process)."""
        self._handles = {}

    # ---- pickling / fork safety -------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_cached_bytes"], state["_handles"] = OrderedDict(), 0, {}
        return state

    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # forked loader worker: never share h5py/tiledb handles
            self._close()
            self._cache, self._cached_bytes, self._pid = OrderedDict(), 0, os.getpid()

    # ---- the CountStore protocol ------------------------------------------------------
    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.n_cells} cells, {len(self.names)} datasets, "
                f"{self.vocab.n_genes} genes)")

    @property
    def obs(self) -> pd.DataFrame:
        """Per-cell metadata with a ``dataset`` column; read from disk on first use."""
        if self._obs is None:
            parts = []
            for d, name in enumerate(self.names):
                o = self._read_obs(d).copy()
                o["dataset"] = name
                parts.append(o)
            obs = pd.concat(parts, axis=0)
            if obs.index.has_duplicates:
                obs.index = [f"{d}:{i}" for d, i in zip(obs["dataset"], obs.index)]
            obs["dataset"] = pd.Categorical(obs["dataset"], categories=self.names)
            self._obs = obs
        return self._obs

    def nonzero_cells(self) -> np.ndarray:
        """``(G,)`` int64: number of cells where each vocabulary gene is nonzero (``m_i``)."""
        return self._nonzero

    def observable_mask(self, dataset_ids) -> torch.Tensor:
        """``(B, G)`` bool: genes measured by the dataset of each entry of ``dataset_ids``."""
        if not isinstance(dataset_ids, torch.Tensor):
            dataset_ids = torch.as_tensor(np.asarray(dataset_ids))
        return self._observable_mask[dataset_ids.long()]  # (B, G)

    def split(self, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded stratified split, identical to :meth:`tfmkit.data.corpus.Corpus.split`."""
        return stratified_split(self.dataset_of_cell, len(self.names), val_fraction, seed)

    def block(self, d: int, b: int) -> sp.csr_matrix:
        """Block ``b`` of dataset ``d`` as ``(rows, G)`` float32 CSR in vocabulary columns (cached)."""
        self._check_process()
        key = (d, b)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        lo = b * self.block_cells
        hi = min(lo + self.block_cells, int(self.n_rows[d]))
        indptr, indices, data = self._read_block(d, lo, hi)
        X = remap_csr(indptr, indices, data, self.colmaps[d], self.vocab.n_genes)
        size = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        self._cache[key] = X
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.data.nbytes + old.indices.nbytes + old.indptr.nbytes
        return X

    def block_ids(self, cell_idx) -> np.ndarray:
        """``(B,)`` int64 id of the read block holding each cell (the loader's shuffle runs)."""
        cell_idx = np.asarray(cell_idx, dtype=np.int64)
        ds = self.dataset_of_cell[cell_idx]
        return self.offsets[ds] + (cell_idx - self.offsets[ds]) // self.block_cells

    def dense_counts(self, cell_idx) -> np.ndarray:
        """``(B, G)`` float32 raw counts of the given global cells (0 where unobservable)."""
        cell_idx = np.asarray(cell_idx, dtype=np.int64)
        if cell_idx.size and (cell_idx.min() < 0 or cell_idx.max() >= self.n_cells):
            raise TfmkitError(f"cell indices must be in [0, {self.n_cells}).")
        out = np.zeros((len(cell_idx), self.vocab.n_genes), dtype=np.float32)  # (B, G)
        ds = self.dataset_of_cell[cell_idx]
        rows = cell_idx - self.offsets[ds]
        blocks = rows // self.block_cells
        for d, b in sorted(set(zip(ds.tolist(), blocks.tolist()))):
            sel = np.flatnonzero((ds == d) & (blocks == b))
            out[sel] = self.block(d, b)[rows[sel] - b * self.block_cells].toarray()
        return out

    def iter_csr(self, d: int):
        """Yield ``(row0, csr)`` blocks of dataset ``d`` in vocabulary columns (sorted within each
        row, like :attr:`Corpus.counts`), in row order; uncached: a sequential pass, e.g. for
        :func:`tfmkit.model_card.cell_fingerprints` or an export."""
        self._check_process()
        for lo in range(0, int(self.n_rows[d]), self.block_cells):
            hi = min(lo + self.block_cells, int(self.n_rows[d]))
            indptr, indices, data = self._read_block(d, lo, hi)
            X = remap_csr(indptr, indices, data, self.colmaps[d], self.vocab.n_genes)
            X.sort_indices()  # as the in-memory Corpus stores them (fingerprints hash them)
            yield lo, X
