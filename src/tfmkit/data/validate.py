"""Validation of count matrices (SPEC §2): finite, non-negative, integer-valued, not all zero.

Models in tfmkit normalise counts themselves (library size ``L`` then ``log1p``), so they must
be given *raw* counts. Log-normalised or scaled input is the most common user mistake; given
the AnnData, the error message names the file, lists where raw counts are (layers and ``.raw``
whose values look like counts, :func:`count_layers`) and the exact ``--layer NAME`` to pass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

INTEGER_TOLERANCE = 1e-6
SAMPLE_ROWS = 2000  # rows inspected when judging whether a layer *looks like* counts


def _values(X) -> tuple[np.ndarray, bool]:
    """The stored values of ``X`` (``.data`` for sparse, flattened array for dense), and
    whether implicit zeros exist (sparse matrices with fewer stored entries than cells)."""
    if sp.issparse(X):
        X = X.tocsr() if not isinstance(X, (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix)) else X
        return np.asarray(X.data), True
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu().numpy()
    return np.asarray(X).ravel(), False


def looks_like_counts(X, *, n_rows: int = SAMPLE_ROWS) -> bool:
    """Whether the first ``n_rows`` rows of ``X`` are finite, non-negative, integer-valued
    (within ``1e-6``) and not all zero — a quick screen, not a validation."""
    if X is None or X.shape[0] == 0 or X.shape[1] == 0:
        return False
    if sp.issparse(X) and X.format not in ("csr", "csc"):
        X = X.tocsr()
    data, _ = _values(X[: min(n_rows, X.shape[0])])
    if data.dtype.kind not in "biuf" or not data.size:
        return False
    data = data.astype(np.float64, copy=False)
    return bool(np.isfinite(data).all() and data.min() >= 0 and np.any(data)
                and np.abs(data - np.rint(data)).max() <= INTEGER_TOLERANCE)


def count_layers(adata, *, exclude: str | None = None) -> list[str]:
    """``--layer`` values whose matrix looks like raw counts (:func:`looks_like_counts`):
    layer names in order, then ``"raw"`` for ``adata.raw``; ``exclude`` (the matrix already
    rejected; ``None`` = X) is left out."""
    out = [k for k in adata.layers.keys() if k != exclude and looks_like_counts(adata.layers[k])]
    if adata.raw is not None and exclude != "raw" and looks_like_counts(adata.raw.X):
        out.append("raw")
    return out


def raw_counts_hint(adata=None, *, exclude: str | None = None) -> str:
    """What to do when the chosen matrix is not raw counts: the exact ``--layer NAME`` of each
    layer / ``.raw`` that looks like counts, or — when none does — the layers there are."""
    if adata is None:
        return ("pass the layer that holds raw counts with `--layer NAME` (Python: layer='NAME'; "
                "'raw' = adata.raw)")
    found = count_layers(adata, exclude=exclude)
    if found:
        where = ", ".join("adata.raw" if k == "raw" else f"layers[{k!r}]" for k in found)
        flags = " or ".join(f"`--layer {k}`" for k in found)
        return f"raw counts look to be in {where}: pass {flags} (Python: layer={found[0]!r})"
    layers = sorted(adata.layers.keys())
    have = f"layers {layers}" if layers else "no layers"
    have += ", adata.raw" if adata.raw is not None else ", no adata.raw"
    return (f"no layer holds integer counts either ({have}); use a file with the raw counts "
            f"(e.g. Cell Ranger's filtered_feature_bc_matrix.h5)")


def validate_counts(X, *, name: str = "X", bulk: bool = False, adata=None,
                    source: str | None = None, layer: str | None = None) -> None:
    """Raise :class:`TfmkitError` unless ``X`` looks like a raw count matrix.

    Checks, in order: finite values (no NaN/inf), no negative values, integer values within
    ``1e-6`` (skipped when ``bulk=True``, which allows TPM/FPKM-like non-negative values), and at
    least one nonzero entry. For CSR/CSC/COO matrices only the stored ``.data`` is scanned
    (implicit zeros are valid counts), so the check is linear in the number of nonzeros.

    Parameters
    ----------
    X
        ``(cells, genes)`` scipy sparse matrix, numpy array or torch tensor.
    name
        What to call the matrix in error messages (e.g. ``"layers['counts']"``).
    bulk
        Allow non-integer non-negative values (bulk TPM / normalised bulk counts; Python API
        only — no command has a flag for it).
    adata, layer
        The AnnData ``X`` was taken from and the ``--layer`` it came from (``None`` = X): the
        message then lists the other layers / ``.raw`` that look like counts
        (:func:`raw_counts_hint`).
    source
        The file or dataset name, prefixed to messages (``"pbmc.h5ad: X contains …"``).
    """
    where = f"{source}: " if source else ""
    if X is None:
        raise TfmkitError(f"{where}{name} is empty (None); {raw_counts_hint(adata, exclude=layer)}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise TfmkitError(f"{where}{name} has shape {tuple(X.shape)}: it needs at least one cell and "
                          f"one gene.")
    data, _ = _values(X)
    if data.dtype.kind not in "biuf":
        raise TfmkitError(f"{where}{name} has non-numeric dtype {data.dtype}; pass a numeric count matrix.")
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            what = "NaN" if np.isnan(data).any() else "inf"
            raise TfmkitError(
                f"{where}{name} contains {what}; raw counts are finite — "
                f"{raw_counts_hint(adata, exclude=layer)}."
            )
    if data.size and data.min() < 0:
        raise TfmkitError(
            f"{where}{name} contains negative values (min {float(data.min()):.4g}): it looks scaled "
            f"or centred, and tfmkit needs raw counts — {raw_counts_hint(adata, exclude=layer)}."
        )
    if not bulk and data.dtype.kind == "f" and data.size:
        frac = np.abs(data - np.rint(data))
        if frac.max() > INTEGER_TOLERANCE:
            example = float(data[int(np.argmax(frac))])
            raise TfmkitError(
                f"{where}{name} contains non-integer values (e.g. {example:.4g}): it looks "
                f"log-normalised or scaled, and tfmkit needs raw counts — "
                f"{raw_counts_hint(adata, exclude=layer)}."
            )
    if not data.size or not np.any(data):
        raise TfmkitError(f"{where}{name} is all zeros; {raw_counts_hint(adata, exclude=layer)}.")
