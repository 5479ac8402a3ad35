"""Reading user data: ``.h5ad`` and 10x Genomics ``.h5`` files into AnnData (SPEC §2).

Every failure a user can cause (missing, empty, corrupt file, unknown extension, missing
layer, no cells/genes) becomes a one-line :class:`TfmkitError`. Gene names are *not* made
unique here: :func:`tfmkit.data.hgnc.harmonize_genes` resolves duplicates (reporting them)
after mapping names to HGNC approved symbols.

Which reader to use:

- :func:`read_input` — the file exactly as stored, after checking that ``layer`` (if given)
  exists. Use it for every command whose output is the input plus results (``embed``,
  benchmarks, ``doctor``): pass ``layer=`` on to the functions that need counts
  (``tfmkit.embed(adata, model, layer=...)``, ``Corpus.from_adatas(..., layer=...)``), which
  read the layer without touching ``X``.
- :func:`read_anndata` with ``layer=`` — a counts-only AnnData whose ``X`` *is* the layer (the
  layer is moved into ``X``, the file's own ``X`` is gone; with ``"raw"`` ``var`` and layers are
  ``adata.raw``'s). Only for consumers that want nothing but the counts (pre-training corpora);
  never for data that is written back out.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad

from tfmkit.errors import TfmkitError

H5AD_SUFFIXES = (".h5ad",)
TENX_SUFFIXES = (".h5",)


def _read(path: Path) -> ad.AnnData:
    suffix = path.suffix.lower()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*names are not unique.*")
        if suffix in H5AD_SUFFIXES:
            return ad.read_h5ad(path)
        if suffix in TENX_SUFFIXES:
            import scanpy as sc

            return sc.read_10x_h5(path)
    raise TfmkitError(
        f"unknown file type {path.suffix!r} for {path}; tfmkit reads .h5ad (AnnData) and 10x "
        f"Genomics .h5 files — convert other formats to .h5ad first."
    )


def read_input(path, *, layer: str | None = None) -> ad.AnnData:
    """Read an ``.h5ad`` or 10x ``.h5`` file as stored (``X``, layers, ``.raw`` untouched),
    failing early — before any work — when ``layer`` is given but absent (:func:`check_layer`).
    See the module doc for when to use this rather than :func:`read_anndata`."""
    adata = read_anndata(path)
    if layer is not None:
        check_layer(adata, layer, source=Path(path).name)
    return adata


def read_anndata(path, *, layer: str | None = None) -> ad.AnnData:
    """Read an ``.h5ad`` or 10x ``.h5`` file into memory.

    With ``layer`` the result is a counts-only AnnData (the layer replaces ``X``); to keep the
    file as stored use :func:`read_input` (module doc).

    Parameters
    ----------
    path
        File path (``.h5ad`` or 10x ``filtered_feature_bc_matrix.h5``).
    layer
        If given, ``adata.layers[layer]`` becomes ``adata.X`` (use it when ``X`` holds
        normalised values and raw counts live in a layer). ``"raw"`` selects ``adata.raw.X``
        when no layer of that name exists.

    Returns
    -------
    AnnData with counts in ``X``; ``var_names`` as stored (possibly not unique).
    """
    path = Path(path)
    if not path.exists():
        raise TfmkitError(f"input file {path} does not exist; check the path.")
    if path.is_dir():
        raise TfmkitError(f"{path} is a directory; pass an .h5ad or 10x .h5 file.")
    if path.stat().st_size == 0:
        raise TfmkitError(f"input file {path} is empty (0 bytes); re-export or re-download it.")
    try:
        adata = _read(path)
    except TfmkitError:
        raise
    except Exception as err:  # h5py/anndata raise many types for corrupt files
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise TfmkitError(
            f"could not read {path} ({type(err).__name__}: {msg}); the file is corrupt or not a "
            f"valid {path.suffix} file."
        ) from err
    if layer is not None:
        adata = select_layer(adata, layer)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise TfmkitError(
            f"{path} has {adata.n_obs} cells and {adata.n_vars} genes; tfmkit needs at least one of each."
        )
    return adata


def available_matrices(adata: ad.AnnData) -> str:
    """``layers: ['counts'] (--layer NAME), adata.raw (--layer raw), or X (omit --layer)`` —
    every matrix a ``--layer`` could point to."""
    parts = [f"layers: {sorted(adata.layers.keys())} (--layer NAME)" if len(adata.layers) else "layers: none"]
    if adata.raw is not None:
        parts.append("adata.raw (--layer raw)")
    return ", ".join(parts) + ", or X (omit --layer)"


def check_layer(adata: ad.AnnData, layer: str | None, *, source: str | None = None) -> None:
    """Raise :class:`TfmkitError` unless ``layer`` is ``None``, a key of ``adata.layers`` or
    ``"raw"`` with ``adata.raw`` present; the message lists what the file has."""
    if layer is None or layer in adata.layers or (layer == "raw" and adata.raw is not None):
        return
    where = f" in {source}" if source else ""
    raise TfmkitError(f"layer {layer!r} not found{where}; available {available_matrices(adata)}.")


def select_layer(adata: ad.AnnData, layer: str) -> ad.AnnData:
    """Return ``adata`` with ``adata.layers[layer]`` (or ``adata.raw`` for ``"raw"``) moved into
    ``X`` — the original ``X`` is replaced and the layer removed, in place (meant for freshly
    read files; see the module doc). Raises :class:`TfmkitError` listing the available
    matrices when ``layer`` is absent."""
    check_layer(adata, layer)
    if layer in adata.layers:
        adata.X = adata.layers[layer]
        del adata.layers[layer]
        return adata
    raw = adata.raw.to_adata()
    raw.obs = adata.obs
    return raw
