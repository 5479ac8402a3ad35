"""Write the sharded store of :mod:`tfmkit.data.stores.sharded` (what ``tfmkit prepare`` runs).

One streaming pass per input computes the statistics (cached, :func:`tfmkit.data.sources.scan_file`),
the vocabulary is built from them, then a second pass copies each file's rows, mapped to the
vocabulary, into memory-mapped shards. Memory stays at one read block (4,096 cells) plus
``O(cells)`` vectors; a 10x ``.h5`` input is read whole (these are per-sample files). The store
is written to a temporary directory next to ``out`` and renamed into place at the end, so a
failed or interrupted run leaves nothing at ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from tfmkit.data.sources import (SCAN_BLOCK, harmonized_columns, resolve_paths, scan_file, scan_rows,
                                 vocab_column_maps)
from tfmkit.data.stores.base import remap_csr
from tfmkit.data.stores.sharded import DEFAULT_SHARD_CELLS, FORMAT, MANIFEST, VERSION
from tfmkit.errors import TfmkitError


class _InMemoryRows:
    """The :class:`~tfmkit.data.stores.backed_h5ad.H5adRows` interface over a loaded AnnData."""

    def __init__(self, adata):
        import scipy.sparse as sp

        self.adata, self.X = adata, sp.csr_matrix(adata.X)
        self.n_obs, self.n_vars = self.X.shape

    def read(self, lo, hi):
        X = self.X[lo:hi]
        return X.indptr, X.indices, X.data

    def var(self):
        return self.adata.var

    def obs(self):
        return self.adata.obs

    def close(self):
        pass


def _open(path: Path, layer):
    if path.suffix.lower() == ".h5ad":
        from tfmkit.data.stores.backed_h5ad import H5adRows

        return H5adRows(path, layer)
    from tfmkit.data.io import read_anndata

    return _InMemoryRows(read_anndata(path, layer=layer))


def _shrink_npy(path: Path, n: int) -> None:
    """Cut a 1-D ``.npy`` file to its first ``n`` elements in place (header rewritten, same length)."""
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
        d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (n,)}
        text = repr(d).encode("latin1")
        start = 8 + (2 if version == (1, 0) else 4)
        fh.seek(start)
        fh.write(text + b" " * (offset - start - len(text) - 1) + b"\n")
        fh.truncate(offset + n * dtype.itemsize)


def _write_shard(reader, colmap, n_genes: int, lo: int, hi: int, bound: int, folder: Path) -> None:
    folder.mkdir(parents=True)
    fmt = np.lib.format
    indptr = np.zeros(hi - lo + 1, np.int64)
    indices = fmt.open_memmap(folder / "indices.npy", mode="w+", dtype=np.int32, shape=(max(bound, 1),))
    data = fmt.open_memmap(folder / "data.npy", mode="w+", dtype=np.float32, shape=(max(bound, 1),))
    pos = 0
    for a in range(lo, hi, SCAN_BLOCK):
        b = min(a + SCAN_BLOCK, hi)
        X = remap_csr(*reader.read(a, b), colmap, n_genes)
        indices[pos:pos + X.nnz] = X.indices
        data[pos:pos + X.nnz] = X.data
        indptr[a - lo + 1:b - lo + 1] = pos + X.indptr[1:]
        pos += X.nnz
    indices.flush()
    data.flush()
    del indices, data
    np.save(folder / "indptr.npy", indptr)
    for k in ("indices", "data"):
        _shrink_npy(folder / f"{k}.npy", pos)


def write_store(inputs, out, *, layer: str | None = None, min_cells: int = 10,
                shard_cells: int = DEFAULT_SHARD_CELLS, allow_low_coverage: bool = False,
                cache_dir=None, progress=None) -> Path:
    """Write the ``--data`` entries ``inputs`` (files, directories, manifests) as a sharded store.

    The vocabulary keeps genes nonzero in ``>= min_cells`` cells over all inputs (as
    :meth:`GeneVocab.from_adatas`); each dataset keeps its observable genes. Refuses an existing
    ``out``. ``progress(message)`` is called once per input file. Returns ``out``.
    """
    from anndata.io import write_elem
    import h5py

    out = Path(out)
    if out.exists():
        raise TfmkitError(f"{out} already exists; choose another --out or remove it first.")
    if shard_cells < 1:
        raise TfmkitError(f"shard_cells must be >= 1, got {shard_cells}.")
    files = resolve_paths(inputs)
    stats, cols = [], []
    for name, f in files:
        if progress:
            progress(f"scanning {f}")
        if f.suffix.lower() == ".h5ad":
            st = scan_file(f, layer=layer, cache_dir=cache_dir)
        else:
            r = _open(f, layer)
            st = scan_rows(r, name=f.name)
        r = _open(f, layer)
        symbols, col, a = harmonized_columns(r.var(), f.name)
        r.close()
        stats.append(st)
        cols.append((symbols, col, a))
    vocab, colmaps, gs = vocab_column_maps([name for name, _ in files], cols, stats, min_cells=min_cells,
                                           allow_low_coverage=allow_low_coverage)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shards = []
        (tmp / "obs").mkdir(parents=True)
        for d, ((name, f), cm, st) in enumerate(zip(files, colmaps, stats)):
            if progress:
                progress(f"writing {name} ({st.n_obs} cells)")
            reader = _open(f, layer)
            try:
                for lo in range(0, st.n_obs, shard_cells):
                    hi = min(lo + shard_cells, st.n_obs)
                    rel = f"shards/{len(shards):05d}"
                    _write_shard(reader, cm, vocab.n_genes, lo, hi, int(st.row_nnz[lo:hi].sum()), tmp / rel)
                    shards.append({"dataset": d, "start": lo, "n": hi - lo, "dir": rel})
                with h5py.File(tmp / "obs" / f"{d}.h5", "w") as fh:
                    write_elem(fh, "obs", reader.obs())
            finally:
                reader.close()
        np.savez(tmp / "stats.npz", library_sizes=np.concatenate([s.library_sizes for s in stats]),
                 nonzero_cells=gs["nonzero_cells"].to_numpy(), gene_mean=gs["mean"].to_numpy(),
                 gene_var=gs["var"].to_numpy(),
                 **{f"observable_{d}": np.unique(cm[cm >= 0]) for d, cm in enumerate(colmaps)})
        vocab.save(tmp / "vocab.json")
        meta = {"format": FORMAT, "version": VERSION, "names": [n for n, _ in files],
                "n_cells": [int(s.n_obs) for s in stats], "shards": shards,
                "sources": [{"name": n, "path": str(f), "size": f.stat().st_size, "layer": layer}
                            for n, f in files], "min_cells": min_cells}
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=1))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
