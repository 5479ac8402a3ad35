"""Control-based post-processing of perturbation embeddings (TxFM §B.1; Bendidi et al. 2024).

Every function is pure: ``X`` ``(N, D)`` cells x features, ``batches`` ``(N,)`` batch labels and
``is_control`` ``(N,)`` boolean mask of non-targeting control cells; each returns a new float32
array. Statistics are always estimated on the control cells only, so perturbation effects are not
normalised away:

* :func:`center_on_controls`  ``x - mu_b``, ``mu_b`` = mean of the controls of batch ``b``.
* :func:`standardize_on_controls`  ``(x - mu_b) / sd_b`` (per-feature sd of the batch's controls;
  features with zero control variance keep scale 1, as in ``sklearn.preprocessing.StandardScaler``).
* :func:`tvn` typical variation normalisation (Ando et al. 2017), in the four steps of the
  benchmark's public reference: centre-scale on all controls; PCA fit on the controls (all
  components); centre-scale on the controls per batch; per batch multiply by
  ``(C_b + 0.5 I)^{-1/2}``, ``C_b`` the covariance of that batch's controls. The ``+ 0.5 I``
  shrinkage means the whitened control covariance is ``C_b (C_b + 0.5 I)^{-1}`` (eigenvalues
  ``l / (l + 0.5)``), not exactly ``I``; ``reg=0`` gives exact whitening.
* :func:`align_for_consistency` PCA fit on controls, then per-batch standardisation on controls
  (the alignment used before perturbation consistency, TxFM §B.1).

PCA and the inverse square root use ``numpy.linalg.eigh`` (the matrix is symmetric positive definite)
instead of ``scipy.linalg.fractional_matrix_power``, which goes through a Schur decomposition
and can return a complex array; :func:`tvn` is tested against the scipy function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.ridge import lapack_threads

TVN_REG = 0.5


def _check(X, batches, is_control) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise TfmkitError(f"embedding must be a 2-D array (cells x features), got shape {X.shape}")
    batches = np.asarray(batches)
    is_control = np.asarray(is_control)
    if is_control.dtype != bool:
        raise TfmkitError("is_control must be a boolean mask; build it with labels == control_value")
    if len(batches) != len(X) or len(is_control) != len(X):
        raise TfmkitError(f"batches ({len(batches)}) and is_control ({len(is_control)}) must have "
                          f"one entry per cell ({len(X)})")
    if not is_control.any():
        raise TfmkitError("no control cells found; check --control-key/--control-value")
    for b in np.unique(batches):
        if not is_control[batches == b].any():
            raise TfmkitError(f"batch '{b}' has no control cells; control-based post-processing "
                              "needs controls in every batch (drop that batch or merge batches)")
    return X, batches, is_control


def _scale(sd: np.ndarray) -> np.ndarray:
    """StandardScaler convention: zero (or non-finite) spread -> scale 1."""
    sd = np.asarray(sd, dtype=np.float32)
    return np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0).astype(np.float32)


def _center_scale(X, ref: np.ndarray, scale: bool) -> np.ndarray:
    """``(X - mean(ref)) / sd(ref)`` (population sd, ddof 0, like StandardScaler)."""
    out = X - ref.mean(axis=0, dtype=np.float64).astype(np.float32)
    if scale:
        out /= _scale(ref.std(axis=0, dtype=np.float64))
    return out


def _per_batch(X, batches, is_control, scale: bool) -> np.ndarray:
    out = np.empty_like(X)
    for b in np.unique(batches):
        rows = batches == b
        out[rows] = _center_scale(X[rows], X[rows & is_control], scale)
    return out


def center_on_controls(X, batches, is_control) -> np.ndarray:
    """Subtract the per-batch mean of the control cells: ``x_n - mu_{b(n)}``."""
    X, batches, is_control = _check(X, batches, is_control)
    return _per_batch(X, batches, is_control, scale=False)


def standardize_on_controls(X, batches, is_control) -> np.ndarray:
    """Per-batch z-score against the controls: ``(x_n - mu_{b(n)}) / sd_{b(n)}``."""
    X, batches, is_control = _check(X, batches, is_control)
    return _per_batch(X, batches, is_control, scale=True)


def _control_axes(ctrl: np.ndarray) -> np.ndarray:
    """Principal axes ``(K, D)`` of the centred control matrix ``ctrl`` ``(n_c, D)``, from the
    eigendecomposition of the smaller of its Gram and covariance matrices (exact PCA, cheaper
    than an SVD here); near-zero axes dropped, sklearn's sign convention."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    with lapack_threads():
        if ctrl.shape[0] <= ctrl.shape[1]:
            w, U = np.linalg.eigh(ctrl @ ctrl.T)  # (n_c, n_c)
            keep = w > max(w.max(initial=0.0), 1e-300) * 1e-10
            vt = (ctrl.T @ (U[:, keep] / np.sqrt(w[keep]))).T
        else:
            w, V = np.linalg.eigh(ctrl.T @ ctrl)  # (D, D)
            keep = w > max(w.max(initial=0.0), 1e-300) * 1e-10
            vt = V[:, keep].T
    vt = vt[np.argsort(w[keep])[::-1]]
    # deterministic signs (sklearn's convention): largest-magnitude loading of each axis positive
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    return vt


def _pca_on_controls(X: np.ndarray, is_control: np.ndarray, n_components: int | None) -> np.ndarray:
    """Project all cells on the principal axes of the (centred) control cells, all components
    by default (at most ``min(n_controls, D)``)."""
    mu = X[is_control].mean(axis=0, dtype=np.float64)
    vt = _control_axes(X[is_control] - mu)
    if n_components is not None:
        vt = vt[:n_components]
    return ((X - mu.astype(np.float32)) @ vt.T.astype(np.float32)).astype(np.float32)  # (N, K)


def inv_sqrt_psd(C: np.ndarray) -> np.ndarray:
    """``C^{-1/2}`` of a symmetric positive-definite matrix via its eigendecomposition."""
    with lapack_threads():
        w, V = np.linalg.eigh(np.asarray(C, dtype=np.float64))
    w = np.clip(w, 1e-12, None)
    return (V * (1.0 / np.sqrt(w))) @ V.T


def tvn(X, batches, is_control, *, reg: float = TVN_REG, n_components: int | None = None) -> np.ndarray:
    """Typical variation normalisation (TxFM §B.1; Ando et al. 2017).

    1. ``X <- (X - mu_ctrl) / sd_ctrl`` on all controls;
    2. ``X <- PCA_ctrl(X)`` (fit on controls, ``n_components`` or all non-degenerate axes);
    3. ``X <- (X - mu_{ctrl,b}) / sd_{ctrl,b}`` per batch;
    4. ``X_b <- X_b (Cov(ctrl_b) + reg I)^{-1/2}`` per batch (``Cov`` with ddof 1).
    """
    X, batches, is_control = _check(X, batches, is_control)
    Z = _center_scale(X, X[is_control], scale=True)
    Z = _pca_on_controls(Z, is_control, n_components)
    Z = _per_batch(Z, batches, is_control, scale=True)
    out = np.empty_like(Z)
    eye = np.eye(Z.shape[1])
    for b in np.unique(batches):
        rows = batches == b
        ctrl = Z[rows & is_control].astype(np.float64)
        cov = np.cov(ctrl, rowvar=False, ddof=1) if len(ctrl) > 1 else np.zeros_like(eye)
        W = inv_sqrt_psd(np.atleast_2d(cov) + reg * eye).astype(np.float32)  # (K, K)
        out[rows] = Z[rows] @ W
    return out


def align_for_consistency(X, batches, is_control, *, n_components: int | None = None) -> np.ndarray:
    """PCA fit on the controls, then per-batch standardisation on the controls (TxFM §B.1,
    the alignment applied before perturbation consistency)."""
    X, batches, is_control = _check(X, batches, is_control)
    Z = _pca_on_controls(X, is_control, n_components)
    return _per_batch(Z, batches, is_control, scale=True)


POSTPROCESSORS: dict[str, Callable[..., np.ndarray]] = {
    "center": center_on_controls,
    "standardize": standardize_on_controls,
    "tvn": tvn,
}


def postprocess(X, batches, is_control, method: str) -> np.ndarray:
    """Apply the post-processing named ``method`` (one of :data:`POSTPROCESSORS`)."""
    if method not in POSTPROCESSORS:
        raise TfmkitError(f"unknown post-processing {method!r}; use one of {sorted(POSTPROCESSORS)}")
    return POSTPROCESSORS[method](X, batches, is_control)
