"""Streaming cell embedding of an ``.h5ad`` larger than RAM (issue 13 item 4).

:func:`embed_h5ad` reads the input's counts in row blocks with h5py
(:class:`~tfmkit.data.stores.backed_h5ad.H5adRows`), embeds each block with :func:`tfmkit.embed`
and writes the rows of ``obsm[KEY]`` as they come into a copy of the input (or into a separate
``.npy`` array when the output path ends in ``.npy``). Memory is bounded by one block
(``block_cells`` cells as sparse counts, plus the model's batches), whatever the file size.

The result equals ``tfmkit.embed`` on the whole file loaded in memory: genes are harmonised once
for the whole file, each cell's library size is its total over all the file's genes (as in
memory), and the reveal seeds follow the cell's position in the file when :func:`tfmkit.embed`
accepts ``cell_offset``. The output is written to a temporary file next to it and renamed at the
end: a failed run leaves no partial output, and an existing output is refused unless
``overwrite``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

DEFAULT_BLOCK_CELLS = 4096
_LIB_COLUMN = "_tfmkit_library_size"


def _write_array_attrs(ds, kind: str = "array") -> None:
    ds.attrs["encoding-type"] = kind
    ds.attrs["encoding-version"] = "0.2.0" if kind == "array" else "0.1.0"


def _library_column(f, library_key: str | None, lo: int, hi: int):
    from anndata.io import read_elem

    if library_key is None:
        return None
    if library_key not in f["obs"]:
        raise TfmkitError(f"the input has no obs column {library_key!r} for library sizes.")
    return np.asarray(read_elem(f["obs"][library_key]))[lo:hi]


def embed_h5ad(input_path, model, output_path, *, key: str = "X_tfmkit", layer: str | None = None,
               library_key: str | None = None, n_revealed: int | None = None, n_views: int = 1,
               pooling: str = "cls", batch_size: int = 64, seed: int = 0,
               block_cells: int = DEFAULT_BLOCK_CELLS, allow_low_coverage: bool = False,
               overwrite: bool = False, progress: bool = False) -> dict:
    """Embed every cell of the ``.h5ad`` ``input_path`` with bounded memory.

    ``output_path`` ``*.h5ad``: a copy of the input plus ``obsm[key]`` (cells x D float32) and
    the provenance ``uns['tfmkit'][key]`` of :func:`tfmkit.embed` (with ``streamed: True`` and
    ``block_cells``); nothing else changes. ``output_path`` ``*.npy``: only the embedding array.
    ``model`` is what :func:`tfmkit.embed` accepts (a loaded model or a model directory); the
    other arguments are those of :func:`tfmkit.embed`. Returns ``{"n_cells", "dim", "output",
    "n_cells_no_counts"}``.
    """
    import anndata as ad
    import scipy.sparse as sp

    import tfmkit
    from tfmkit.data.sources import harmonized_columns
    from tfmkit.data.stores.backed_h5ad import H5adRows

    src, out = Path(input_path), Path(output_path)
    if not src.is_file():
        raise TfmkitError(f"input file {src} does not exist; check the path.")
    if out.suffix.lower() not in (".h5ad", ".npy"):
        raise TfmkitError(f"output {out} must end in .h5ad (input + obsm) or .npy (the embedding only).")
    if out.exists() and not overwrite:
        raise TfmkitError(f"{out} already exists; pass overwrite=True (--overwrite) or choose another output.")
    if out.resolve() == src.resolve():
        raise TfmkitError("the output must differ from the input; the input is never modified.")
    if batch_size < 1 or block_cells < 1:
        raise TfmkitError("batch_size and block_cells must be >= 1.")
    block = max(batch_size, (block_cells // batch_size) * batch_size)  # whole batches per block
    model = tfmkit.load_model(model) if isinstance(model, (str, os.PathLike)) else model
    reader = H5adRows(src, layer)
    symbols, cols, harm = harmonized_columns(reader.var(), src.name)
    var = harm.var.drop(columns=["_tfmkit_col"])
    offset_ok = "cell_offset" in inspect.signature(tfmkit.embed).parameters
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    n, emb, prov, n_empty, dim = reader.n_obs, None, None, 0, 0
    try:
        if out.suffix.lower() == ".h5ad":
            shutil.copyfile(src, tmp)
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            indptr, indices, data = reader.read(lo, hi)
            X = sp.csr_matrix((np.asarray(data), np.asarray(indices), np.asarray(indptr)),
                              shape=(hi - lo, reader.n_vars))
            obs = pd.DataFrame(index=pd.Index([str(i) for i in range(lo, hi)]))
            lib = _library_column(reader.file, library_key, lo, hi)
            obs[_LIB_COLUMN] = lib if lib is not None else np.asarray(X.sum(axis=1), np.float64).ravel()
            part = ad.AnnData(X=X[:, cols], obs=obs, var=var)
            quiet = contextlib.redirect_stderr(io.StringIO()) if lo else contextlib.nullcontext()
            with quiet:  # coverage lines are printed once, for the first block
                tfmkit.embed(part, model, key=key, n_revealed=n_revealed, n_views=n_views, pooling=pooling,
                             batch_size=batch_size, seed=seed, library_key=_LIB_COLUMN,
                             allow_low_coverage=allow_low_coverage, **({"cell_offset": lo} if offset_ok else {}))
            e = np.asarray(part.obsm[key], dtype=np.float32)  # (rows, D)
            p = dict(part.uns["tfmkit"][key])
            n_empty += int(p.get("n_cells_no_counts", 0))
            if emb is None:
                prov, dim = p, e.shape[1]
                emb = _open_output(tmp, out, key, n, dim)
            emb[lo:hi] = e
            if progress:
                print(f"embedded {hi}/{n} cells", file=sys.stderr)
        if emb is None:
            raise TfmkitError(f"{src} has no cells to embed.")
        _finish_output(tmp, out, emb, key, prov, n_empty, block)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        reader.close()
    if n_empty:
        print(f"warning: {n_empty} of {n} cells have no counts in the model's genes; their embeddings "
              "carry no information about them (uns['tfmkit'] records the count)", file=sys.stderr)
    return {"n_cells": n, "dim": int(dim), "output": out, "n_cells_no_counts": n_empty}


def _open_output(tmp: Path, out: Path, key: str, n: int, dim: int):
    """The ``(n, dim)`` float32 array the embedding rows are written into."""
    if out.suffix.lower() == ".npy":
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    import h5py

    f = h5py.File(tmp, "a")
    if "obsm" not in f:
        g = f.create_group("obsm")
        _write_array_attrs(g, "dict")
    if key in f["obsm"]:
        del f["obsm"][key]
    ds = f["obsm"].create_dataset(key, shape=(n, dim), dtype=np.float32, chunks=(min(n, 4096), dim))
    _write_array_attrs(ds)
    return ds


def _finish_output(tmp: Path, out: Path, emb, key: str, prov: dict, n_empty: int, block: int) -> None:
    if out.suffix.lower() == ".npy":
        emb.flush()
        del emb
        return
    from anndata.io import read_elem, write_elem

    f = emb.file
    uns = f["uns"] if "uns" in f else None
    old = read_elem(uns["tfmkit"]) if uns is not None and "tfmkit" in uns else {}
    prov = {**prov, "n_cells_no_counts": n_empty, "streamed": True, "block_cells": block}
    merged = {**dict(old), key: prov}
    if uns is None:
        write_elem(f, "uns", {"tfmkit": merged})
    else:
        if "tfmkit" in uns:
            del uns["tfmkit"]
        write_elem(uns, "tfmkit", merged)
    f.close()
