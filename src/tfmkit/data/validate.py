"""Validation of count matrices (SPEC §2): finite, non-negative, integer-valued, not all zero.

Models in tfmkit normalise counts themselves (library size ``L`` then ``log1p``), so they must
be given *raw* counts. Log-normalised or scaled input is the most common user mistake; the
error message says how to point tfmkit at the raw counts instead.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

INTEGER_TOLERANCE = 1e-6


def _values(X) -> tuple[np.ndarray, bool]:
    """The stored values of ``X`` (``.data`` for sparse, flattened array for dense), and
    whether implicit zeros exist (sparse matrices with fewer stored entries than cells)."""
    if sp.issparse(X):
        X = X.tocsr() if not isinstance(X, (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix)) else X
        return np.asarray(X.data), True
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu().numpy()
    return np.asarray(X).ravel(), False


def validate_counts(X, *, name: str = "X", bulk: bool = False) -> None:
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
        Allow non-integer non-negative values (bulk TPM / normalised bulk counts).
    """
    if X is None:
        raise TfmkitError(f"{name} is empty (None); pass an AnnData whose {name} holds raw counts.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise TfmkitError(f"{name} has shape {tuple(X.shape)}: it needs at least one cell and one gene.")
    data, _ = _values(X)
    if data.dtype.kind not in "biuf":
        raise TfmkitError(f"{name} has non-numeric dtype {data.dtype}; pass a numeric count matrix.")
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            what = "NaN" if np.isnan(data).any() else "inf"
            raise TfmkitError(
                f"{name} contains {what}; raw counts must be finite — remove or impute those "
                f"entries, or point tfmkit at the raw counts with `--layer` / adata.raw."
            )
    if data.size and data.min() < 0:
        raise TfmkitError(
            f"{name} contains negative values (min {float(data.min()):.4g}): it looks scaled or "
            f"centred; pass raw counts via `--layer NAME` (adata.layers) or adata.raw.X."
        )
    if not bulk and data.dtype.kind == "f" and data.size:
        frac = np.abs(data - np.rint(data))
        if frac.max() > INTEGER_TOLERANCE:
            example = float(data[int(np.argmax(frac))])
            raise TfmkitError(
                f"{name} contains non-integer values (e.g. {example:.4g}): it looks log-normalised "
                f"or scaled; pass raw counts via `--layer NAME` (adata.layers) or adata.raw.X, or "
                f"use bulk=True (`--bulk`) for TPM/bulk values."
            )
    if not data.size or not np.any(data):
        raise TfmkitError(f"{name} is all zeros; pass a matrix of raw counts with detected genes.")
