"""Invertibility to expression (TxFM §B.1 "Latent Space Interpretability", inv).

A ridge decoder ``Y ~ X W + b`` maps the embedding ``X`` ``(N, D)`` back to log-normalised
expression ``Y`` ``(N, G)``. Predictions are cross-fitted leave-one-batch-out (every batch is
predicted by a decoder trained on the other batches), so every cell gets an out-of-sample
prediction and no seed is involved. Two metrics, in percent, averaged into the task score:

* Spearman: per batch and gene, Spearman correlation between predicted and actual values over
  the batch's cells (genes constant in a batch are skipped); mean over genes, then batches.
* Structural integrity: with ``Y~^(b)`` the batch's matrix minus the mean of its control cells,
  ``Dist = (1/B) sum_b (1/n_b) ||Y~_pred^(b) - Y~_actual^(b)||_F`` and
  ``SI = 1 - Dist / Dist_max``, ``Dist_max = (1/B) sum_b (2/n_b) ||Y~_actual^(b)||_F`` — the
  distance of the sign-flipped profile ``Y~_pred = -Y~_actual`` (the paper leaves the bound
  unspecified; this one is computed from the actual data only). Perfect decoding gives 1,
  predicting the control profile for every cell gives 0.5, clipped to ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.ridge import BatchRidge, batch_groups, group_codes


def spearman_columns(pred, actual) -> np.ndarray:
    """Spearman correlation of each column of ``pred`` with the same column of ``actual``
    (average ranks for ties, as ``scipy.stats.spearmanr``); NaN where a column is constant."""
    a = rankdata(np.asarray(actual), axis=0)
    p = rankdata(np.asarray(pred), axis=0)
    a -= a.mean(axis=0)
    p -= p.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (p * p).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * p).sum(axis=0) / np.where(den > 0, den, 1.0), np.nan)


def structural_integrity(pred, actual, batches, is_control) -> float:
    """``100 * (1 - Dist / Dist_max)`` of control-centred predicted vs actual profiles."""
    pred, actual = np.asarray(pred, np.float64), np.asarray(actual, np.float64)
    batches, is_control = np.asarray(batches), np.asarray(is_control, bool)
    dist, dmax = [], []
    for b in np.unique(batches):
        rows = batches == b
        ctrl = rows & is_control
        if not ctrl.any():
            raise TfmkitError(f"batch '{b}' has no control cells; structural integrity centres "
                              "each batch on its controls")
        ya = actual[rows] - actual[ctrl].mean(axis=0)
        yp = pred[rows] - pred[ctrl].mean(axis=0)
        n_b = rows.sum()
        dist.append(np.linalg.norm(yp - ya) / n_b)
        dmax.append(2.0 * np.linalg.norm(ya) / n_b)
    d, m = float(np.mean(dist)), float(np.mean(dmax))
    if m <= 0:
        return float("nan")
    return 100.0 * float(np.clip(1.0 - d / m, 0.0, 1.0))


def mean_spearman(pred, actual, batches) -> float:
    """Mean per-gene Spearman (percent) within each batch, averaged over batches."""
    batches = np.asarray(batches)
    per_batch = []
    for b in np.unique(batches):
        rows = batches == b
        rho = spearman_columns(pred[rows], actual[rows])
        if np.isfinite(rho).any():
            per_batch.append(np.nanmean(rho))
    return 100.0 * float(np.mean(per_batch)) if per_batch else float("nan")


def cross_fit_predictions(X, Y, batches, *, is_control=None, rel_alpha: float = 1e-2,
                          ridge: BatchRidge | None = None) -> np.ndarray:
    """Leave-one-batch-out ridge predictions of ``Y`` ``(N, G)`` from ``X`` ``(N, D)``
    (``ridge``: optional statistics of ``X`` built with ``group_codes(batches, is_control)``)."""
    batches = np.asarray(batches)
    levels = np.unique(batches)
    if len(levels) < 2:
        raise TfmkitError("invertibility decodes each batch from the others; it needs >= 2 batches")
    ridge = ridge if ridge is not None else BatchRidge(X, group_codes(batches, is_control), rel_alpha=rel_alpha)
    ridge.add_target("_expr", Y)
    pred = np.empty((len(batches), Y.shape[1]), np.float32)  # (N, G)
    for b in levels:
        rows = np.flatnonzero(batches == b)
        train = batch_groups(batches, [c for c in levels if c != b], controls=True)
        pred[rows] = ridge.predict("_expr", train, rows)
    return pred


def invertibility(X, Y, batches, is_control, *, rel_alpha: float = 1e-2,
                  ridge: BatchRidge | None = None) -> dict[str, float]:
    """``{"spearman": %, "structural_integrity": %}`` of a cross-fitted linear decoder."""
    Yd = np.asarray(Y.toarray() if sp.issparse(Y) else Y, dtype=np.float32)
    if len(Yd) != len(np.asarray(batches)):
        raise TfmkitError("Y must have one row per cell")
    pred = cross_fit_predictions(X, Yd, batches, is_control=is_control, rel_alpha=rel_alpha, ridge=ridge)
    return {"spearman": mean_spearman(pred, Yd, batches),
            "structural_integrity": structural_integrity(pred, Yd, batches, is_control)}
