"""Many files, one corpus: ``--data`` paths, directories and manifests -> one count store.

:func:`open_corpus` is what ``tfmkit pretrain --data ...`` uses (via
:func:`tfmkit.training.load_corpus`). Each ``--data`` entry is

- an ``.h5ad`` / 10x ``.h5`` file (one dataset, its own gene panel);
- a directory of such files (non-recursive, sorted by name);
- a manifest: ``.txt`` (one path per line, ``#`` comments) or ``.csv`` with a ``path`` column
  and optional ``name`` column; relative paths are relative to the manifest;
- a store written by ``tfmkit prepare`` (:class:`~tfmkit.data.stores.sharded.ShardedStore`) or a
  TileDB-SOMA experiment (:class:`~tfmkit.data.stores.soma.SomaStore`) — alone.

When the files' counts, as in-memory CSR, fit in ``max_in_memory_gb`` they are loaded into the
in-memory :class:`~tfmkit.data.corpus.Corpus` exactly as before; otherwise they are read in
row blocks (:class:`~tfmkit.data.stores.backed_h5ad.H5adStore`). The vocabulary and per-gene
statistics then come from one streaming pass over each file (:func:`scan_file`: nonzero cells
per gene for ``tau`` weights and the vocabulary, library sizes, and the mean/variance of
``log1p(1e4 x / lib)`` per gene for HVG selection), cached in ``.tfmkit_cache/`` next to the file
(or the user cache directory when that is not writable) and reused while the file's size and
modification time are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

DEFAULT_MAX_IN_MEMORY_GB = 4.0
"""Default memory budget for loading ``--data`` files whole (in-memory CSR bytes)."""
SCAN_BLOCK = 4096
HVG_TARGET_SUM = 1e4
CACHE_VERSION = 1
COUNT_SUFFIXES = (".h5ad", ".h5")


@dataclass
class FileStats:
    """One streaming pass over a file's counts (per stored column / per cell)."""

    n_obs: int
    n_vars: int
    nonzero: np.ndarray       # (n_vars,) cells where the column is nonzero
    library_sizes: np.ndarray  # (n_obs,) row sums over all columns
    row_nnz: np.ndarray       # (n_obs,) nonzero entries per row
    log_sum: np.ndarray       # (n_vars,) sum over cells of log1p(1e4 x / lib)
    log_sumsq: np.ndarray     # (n_vars,) sum of squares of the same


def _cache_path(path: Path, layer: str | None, cache_dir: Path | None) -> Path:
    name = f"{path.name}.{layer or 'X'}.stats.npz"
    if cache_dir is not None:
        return Path(cache_dir) / f"{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}.{name}"
    here = path.parent / ".tfmkit_cache"
    if os.access(path.parent, os.W_OK):
        return here / name
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tfmkit" / "stats"
    return home / f"{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}.{name}"


def _cache_key(path: Path, layer: str | None) -> str:
    st = path.stat()
    return f"v{CACHE_VERSION}|{st.st_size}|{st.st_mtime_ns}|{layer}"


def scan_rows(reader, *, name: str, bulk: bool = False) -> FileStats:
    """Statistics of every row block of ``reader`` (``.read(lo, hi)``, ``n_obs``, ``n_vars``),
    validating the counts block by block (:func:`tfmkit.data.validate.validate_counts`)."""
    import scipy.sparse as sp

    from tfmkit.data.validate import validate_counts

    n, g = reader.n_obs, reader.n_vars
    nonzero = np.zeros(g, np.int64)
    lib = np.zeros(n, np.float64)
    row_nnz = np.zeros(n, np.int64)
    s1, s2 = np.zeros(g, np.float64), np.zeros(g, np.float64)
    any_nonzero = False
    for lo in range(0, n, SCAN_BLOCK):
        hi = min(lo + SCAN_BLOCK, n)
        indptr, indices, data = reader.read(lo, hi)
        X = sp.csr_matrix((np.asarray(data), np.asarray(indices), np.asarray(indptr)), shape=(hi - lo, g))
        if X.nnz and np.any(X.data):
            validate_counts(X, name=f"{name} rows {lo}-{hi}", bulk=bulk)
            any_nonzero = True
        X.eliminate_zeros()
        lib[lo:hi] = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        row_nnz[lo:hi] = np.diff(X.indptr)
        nonzero += np.bincount(X.indices, minlength=g)
        rows = np.repeat(np.arange(hi - lo), np.diff(X.indptr))
        v = np.log1p(HVG_TARGET_SUM * X.data / np.maximum(lib[lo:hi][rows], 1.0))
        s1 += np.bincount(X.indices, weights=v, minlength=g)
        s2 += np.bincount(X.indices, weights=v * v, minlength=g)
    if not any_nonzero:
        raise TfmkitError(f"{name} is all zeros; pass a file (or --layer) with raw counts.")
    return FileStats(n, g, nonzero, lib, row_nnz, s1, s2)


def scan_file(path, *, layer: str | None = None, cache_dir=None, bulk: bool = False) -> FileStats:
    """:func:`scan_rows` of an ``.h5ad`` file read in blocks, cached next to the file."""
    from tfmkit.data.stores.backed_h5ad import H5adRows

    path = Path(path)
    cache = _cache_path(path, layer, Path(cache_dir) if cache_dir else None)
    key = _cache_key(path, layer)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return FileStats(int(z["n_obs"]), int(z["n_vars"]), z["nonzero"], z["library_sizes"],
                                     z["row_nnz"], z["log_sum"], z["log_sumsq"])
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: recompute and overwrite it
    reader = H5adRows(path, layer)
    try:
        stats = scan_rows(reader, name=path.name, bulk=bulk)
    finally:
        reader.close()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), n_obs=stats.n_obs, n_vars=stats.n_vars, nonzero=stats.nonzero,
                     library_sizes=stats.library_sizes, row_nnz=stats.row_nnz, log_sum=stats.log_sum,
                     log_sumsq=stats.log_sumsq)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only location only costs a rescan next time
    return stats


# ---- resolving --data entries ---------------------------------------------------------------
def _manifest(path: Path) -> list[tuple[str | None, Path]]:
    base = path.parent
    out: list[tuple[str | None, Path]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "path" not in rows[0]:
            raise TfmkitError(f"manifest {path} needs a 'path' column (and optionally 'name').")
        out = [(r.get("name") or None, base / r["path"].strip()) for r in rows if r["path"].strip()]
    else:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append((None, base / line))
    if not out:
        raise TfmkitError(f"manifest {path} lists no files.")
    return out


def store_kind(path) -> str | None:
    """``"sharded"`` (a ``tfmkit prepare`` store), ``"soma"`` (a TileDB-SOMA experiment) or ``None``."""
    from tfmkit.data.stores.sharded import MANIFEST

    p = Path(path)
    if p.is_dir() and (p / MANIFEST).is_file():
        return "sharded"
    if p.is_dir() and ((p / "__group").is_dir() or (p / "__tiledb_group.tdb").exists()):
        return "soma"
    return None


def resolve_paths(paths) -> list[tuple[str, Path]]:
    """``(dataset name, file)`` of every count file named by ``paths`` (files, directories,
    manifests), in order; names are file stems, made unique by prefixing the parent folder."""
    items: list[tuple[str | None, Path]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise TfmkitError(f"--data {p} does not exist; check the path.")
        if p.is_dir():
            if store_kind(p):
                raise TfmkitError(f"{p} is a prepared store or SOMA experiment; pass it as the only --data.")
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in COUNT_SUFFIXES and f.is_file())
            if not files:
                raise TfmkitError(f"directory {p} holds no .h5ad or .h5 files.")
            items += [(None, f) for f in files]
        elif p.suffix.lower() in (".txt", ".csv"):
            items += _manifest(p)
        else:
            items.append((None, p))
    seen_files: set = set()
    for _, f in items:
        if not f.is_file():
            raise TfmkitError(f"listed file {f} does not exist; fix the manifest or the path.")
        if f.resolve() in seen_files:
            raise TfmkitError(f"{f} is listed twice in --data; its cells would be trained on twice.")
        seen_files.add(f.resolve())
    stems = [f.stem for _, f in items]
    out, seen = [], set()
    for (name, f), stem in zip(items, stems):
        n = name or (stem if stems.count(stem) == 1 else f"{f.parent.name}/{stem}")
        base, k = n, 2
        while n in seen:
            n, k = f"{base}_{k}", k + 1
        seen.add(n)
        out.append((n, f))
    return out


def estimated_bytes(files, layer: str | None = None) -> int:
    """In-memory CSR bytes of the count files (from their headers; 10x files: 3x file size)."""
    from tfmkit.data.stores.backed_h5ad import H5adRows

    total = 0
    for f in files:
        if Path(f).suffix.lower() == ".h5ad":
            r = H5adRows(f, layer)
            total += r.memory_bytes()
            r.close()
        else:
            total += 3 * Path(f).stat().st_size
    return total


# ---- vocabulary and column maps from the statistics ---------------------------------------
def harmonized_columns(var: pd.DataFrame, name: str):
    """HGNC-harmonised ``(symbols, stored column of each, var)`` of a file's ``var``
    (:func:`tfmkit.data.hgnc.harmonize_genes` on a var-only AnnData; duplicates dropped)."""
    import anndata as ad

    from tfmkit.data.hgnc import harmonize_genes

    v = var.copy()
    v["_tfmkit_col"] = np.arange(len(v))
    a = ad.AnnData(var=v)
    if "hgnc_status" not in var:
        harmonize_genes(a, source=name)
    return a.var_names.astype(str).to_numpy(), a.var["_tfmkit_col"].to_numpy(np.int64), a


def vocab_from_counts(per_file, min_cells: int):
    """:meth:`GeneVocab.from_adatas` from per-file ``(symbols, nonzero cells)``: sorted genes
    nonzero in ``>= min_cells`` cells summed over files."""
    from tfmkit.data.vocab import GeneVocab

    total: dict[str, int] = {}
    for symbols, nz in per_file:
        for g, n in zip(symbols, nz.tolist()):
            total[g] = total.get(g, 0) + int(n)
    genes = sorted(g for g, n in total.items() if n >= min_cells)
    if not genes:
        raise TfmkitError(f"no gene is nonzero in >= {min_cells} cells; lower min_cells.")
    return GeneVocab(genes)


def gene_statistics(vocab, colmaps, stats: list[FileStats]) -> pd.DataFrame:
    """Per vocabulary gene: ``nonzero_cells``, and ``mean`` / ``var`` of ``log1p(1e4 x / lib)``
    over the cells of the datasets that measured it (for HVG selection, e.g. top ``var/mean``)."""
    G = vocab.n_genes
    nz, s1, s2, n = np.zeros(G, np.int64), np.zeros(G), np.zeros(G), np.zeros(G)
    for cm, st in zip(colmaps, stats):
        k = cm >= 0
        nz += np.bincount(cm[k], weights=st.nonzero[k], minlength=G).astype(np.int64)
        s1 += np.bincount(cm[k], weights=st.log_sum[k], minlength=G)
        s2 += np.bincount(cm[k], weights=st.log_sumsq[k], minlength=G)
        n[cm[k]] += st.n_obs
    mean = s1 / np.maximum(n, 1)
    var = np.maximum(s2 / np.maximum(n, 1) - mean ** 2, 0.0)
    return pd.DataFrame({"nonzero_cells": nz, "mean": mean, "var": var}, index=pd.Index(vocab.genes, name="gene"))


def vocab_column_maps(names, cols, stats: list[FileStats], *, vocab=None, min_cells: int = 1,
                      allow_low_coverage: bool = False):
    """``(vocab, colmaps, gene_stats)`` of files ``names`` with :func:`harmonized_columns`
    ``cols`` and statistics ``stats``: the vocabulary (``vocab`` when given, else genes nonzero
    in ``>= min_cells`` cells, :func:`vocab_from_counts`), per file the ``(n_vars,)`` vocabulary
    gene index of each stored column (``-1`` for genes outside it), after the coverage check of
    each file (:func:`tfmkit.data.corpus._check_genes_map`), and :func:`gene_statistics`."""
    from tfmkit.data.corpus import _check_genes_map

    vocab_given = vocab is not None
    if vocab is None:
        vocab = vocab_from_counts([(s, st.nonzero[c]) for (s, c, _), st in zip(cols, stats)], min_cells)
    colmaps = []
    for name, (symbols, col, a), st in zip(names, cols, stats):
        gi = vocab.gene_index(symbols)
        _check_genes_map(name, a, vocab, vocab_given, allow_low_coverage)
        cm = np.full(st.n_vars, -1, np.int64)
        cm[col] = gi
        colmaps.append(cm)
    return vocab, colmaps, gene_statistics(vocab, colmaps, stats)


def open_backed(files, *, vocab=None, layer: str | None = None, min_cells: int = 1,
                allow_low_coverage: bool = False, cache_dir=None, block_cells: int | None = None):
    """:class:`~tfmkit.data.stores.backed_h5ad.H5adStore` over ``(name, path)`` ``.h5ad`` files,
    with vocabulary (unless given), observable genes and statistics from :func:`scan_file`."""
    from tfmkit.data.stores.backed_h5ad import H5adRows, H5adStore

    names, paths, stats, cols = [], [], [], []
    for name, f in files:
        if Path(f).suffix.lower() != ".h5ad":
            raise TfmkitError(f"{f} is not an .h5ad file and cannot be read in blocks; convert it with "
                              "`tfmkit prepare` or raise data.max_in_memory_gb to load it whole.")
        st = scan_file(f, layer=layer, cache_dir=cache_dir)
        r = H5adRows(f, layer)
        var = r.var()
        r.close()
        symbols, col, a = harmonized_columns(var, Path(f).name)
        names.append(name)
        paths.append(Path(f))
        stats.append(st)
        cols.append((symbols, col, a))
    vocab, colmaps, gs = vocab_column_maps(names, cols, stats, vocab=vocab, min_cells=min_cells,
                                           allow_low_coverage=allow_low_coverage)
    kw = {"block_cells": block_cells} if block_cells else {}
    store = H5adStore(paths, vocab, names, [st.n_obs for st in stats], colmaps,
                      np.concatenate([st.library_sizes for st in stats]), gs["nonzero_cells"].to_numpy(),
                      layer=layer, **kw)
    store.gene_stats = gs
    return store


def open_corpus(paths, *, vocab=None, layer: str | None = None, min_cells: int = 1,
                allow_low_coverage: bool = False, max_in_memory_gb: float = DEFAULT_MAX_IN_MEMORY_GB,
                cache_dir=None, block_cells: int | None = None):
    """One count store over the ``--data`` entries ``paths`` (see the module doc).

    In memory (:class:`~tfmkit.data.corpus.Corpus`, unchanged behaviour) when the files' CSR
    counts fit in ``max_in_memory_gb`` GB, else read in blocks (:func:`open_backed`). A prepared
    store or SOMA experiment is opened as such. ``vocab`` (e.g. a resumed run's) aligns the store
    to an existing vocabulary.
    """
    paths = [Path(p) for p in paths]
    kinds = [store_kind(p) for p in paths]
    if any(kinds):
        if len(paths) != 1:
            raise TfmkitError("a prepared store or SOMA experiment must be the only --data entry.")
        if kinds[0] == "sharded":
            from tfmkit.data.stores.sharded import ShardedStore

            return ShardedStore(paths[0], vocab=vocab, **({"block_cells": block_cells} if block_cells else {}))
        from tfmkit.data.stores.soma import SomaStore

        return SomaStore.open(paths[0], vocab=vocab, layer=layer, min_cells=min_cells,
                              **({"block_cells": block_cells} if block_cells else {}))
    files = resolve_paths(paths)
    if estimated_bytes([f for _, f in files], layer) <= max_in_memory_gb * 2**30:
        from tfmkit.data.corpus import Corpus
        from tfmkit.data.io import read_anndata

        adatas = {name: read_anndata(f, layer=layer) for name, f in files}
        return Corpus.from_adatas(adatas, vocab=vocab, min_cells=min_cells, allow_low_coverage=allow_low_coverage)
    return open_backed(files, vocab=vocab, layer=layer, min_cells=min_cells,
                       allow_low_coverage=allow_low_coverage, cache_dir=cache_dir, block_cells=block_cells)
