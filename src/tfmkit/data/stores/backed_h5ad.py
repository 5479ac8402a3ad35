"""Backed ``.h5ad`` count store: rows read in blocks with h5py, ``X`` never loaded whole.

:class:`H5adRows` reads row blocks of one matrix (``X``, ``layers/NAME`` or ``raw/X``) of an
``.h5ad`` file — CSR (``indptr``/``indices``/``data`` slices) or dense — plus its ``var`` and
``obs``. :class:`H5adStore` is the :class:`~tfmkit.data.store.CountStore` over one or more such
files (one dataset per file), built by :func:`tfmkit.data.sources.open_corpus` from the
streaming statistics pass. Measured on 100k resampled BALF cells (2 shared cores, page cache
warm): 28k cells/s reading 256-row CSR blocks with h5py, vs 5.7k/s with lzf and 5k/s for zstd
zarr chunks — compressed files are read correctly but more slowly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.data.stores.base import DEFAULT_BLOCK_CELLS, DEFAULT_CACHE_MB, RowStore
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError


def _decode(x):
    return x.decode() if isinstance(x, bytes) else str(x)


class H5adRows:
    """Row-block reader of one count matrix of an ``.h5ad`` file (opened read-only).

    ``layer`` ``None`` = ``X``; a name = ``layers/NAME``; ``"raw"`` (when no layer has that
    name) = ``raw/X`` with ``raw/var``. CSC matrices are refused (their rows are scattered
    over the whole file); rewrite them as CSR.
    """

    def __init__(self, path, layer: str | None = None):
        import h5py

        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as err:
            raise TfmkitError(f"could not open {self.path} as HDF5 ({err}); the file is corrupt or "
                              "not an .h5ad file.") from err
        f = self.file
        if layer is None:
            where, var_where = "X", "var"
        elif "layers" in f and layer in f["layers"]:
            where, var_where = f"layers/{layer}", "var"
        elif layer == "raw" and "raw" in f:
            where, var_where = "raw/X", "raw/var"
        else:
            avail = sorted(f["layers"].keys()) if "layers" in f else []
            avail += ["raw"] if "raw" in f else []
            raise TfmkitError(f"{self.path.name}: layer {layer!r} not found; available layers: "
                              f"{avail or 'none'} (omit --layer to use X).")
        if where not in f:
            raise TfmkitError(f"{self.path.name} has no {where} matrix; pass --layer with the raw counts.")
        node = f[where]
        self.where, self.var_where = where, var_where
        enc = _decode(node.attrs.get("encoding-type", "array"))
        if enc == "csc_matrix":
            raise TfmkitError(
                f"{self.path.name}: {where} is stored CSC (column-major), whose rows cannot be read in "
                "blocks; rewrite it as CSR (adata.X = adata.X.tocsr(); adata.write_h5ad(...)) or give a "
                "memory budget large enough to load it (data.max_in_memory_gb).")
        self.sparse = enc == "csr_matrix"
        if self.sparse:
            self.shape = tuple(int(v) for v in node.attrs["shape"])
            self.indptr = node["indptr"][:].astype(np.int64)  # (n+1,) the only O(cells) read
            self._indices, self._data = node["indices"], node["data"]
            self.nnz = int(self.indptr[-1])
        elif hasattr(node, "shape") and len(node.shape) == 2:
            self.shape = tuple(int(v) for v in node.shape)
            self._dense = node
            self.indptr = None
            self.nnz = self.shape[0] * self.shape[1]
        else:
            raise TfmkitError(f"{self.path.name}: {where} has encoding {enc!r}; tfmkit reads CSR or dense matrices.")
        self.n_obs, self.n_vars = self.shape

    def var(self) -> pd.DataFrame:
        """The matrix' ``var`` table (index = gene names as stored)."""
        from anndata.io import read_elem

        return read_elem(self.file[self.var_where])

    def obs(self) -> pd.DataFrame:
        """The file's ``obs`` table."""
        from anndata.io import read_elem

        return read_elem(self.file["obs"])

    def read(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, data)`` of rows ``lo:hi`` (indptr starting at 0)."""
        if self.sparse:
            a, b = int(self.indptr[lo]), int(self.indptr[hi])
            return self.indptr[lo:hi + 1] - a, self._indices[a:b], self._data[a:b]
        block = np.asarray(self._dense[lo:hi])  # (rows, n_vars)
        r, c = np.nonzero(block)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=hi - lo))])
        return indptr, c, block[r, c]

    def memory_bytes(self) -> int:
        """Bytes of the matrix as in-memory float32 CSR (the memory-budget estimate)."""
        if self.sparse:
            return self.nnz * 8 + (self.n_obs + 1) * 8
        return self.n_obs * self.n_vars * 4

    def close(self) -> None:
        self.file.close()


class H5adStore(RowStore):
    """Count store over ``.h5ad`` files read in row blocks (one dataset per file).

    Build it with :func:`tfmkit.data.sources.open_corpus`, which computes ``colmaps``, library
    sizes and nonzero counts in one streaming pass. Only ``indptr`` (8 bytes per cell) and the
    block cache are held per file; the files are reopened in each loader worker.
    """

    def __init__(self, paths, vocab: GeneVocab, names, n_rows, colmaps, library_sizes, nonzero_cells, *,
                 layer: str | None = None, block_cells: int = DEFAULT_BLOCK_CELLS,
                 cache_mb: float = DEFAULT_CACHE_MB):
        super().__init__(vocab, names, n_rows, colmaps, library_sizes, nonzero_cells,
                         block_cells=block_cells, cache_mb=cache_mb)
        self.paths = [Path(p) for p in paths]
        self.layer = layer

    def _reader(self, d: int) -> H5adRows:
        r = self._handles.get(d)
        if r is None:
            r = self._handles[d] = H5adRows(self.paths[d], self.layer)
        return r

    def _read_block(self, d: int, lo: int, hi: int):
        return self._reader(d).read(lo, hi)

    def _read_obs(self, d: int) -> pd.DataFrame:
        return self._reader(d).obs()
