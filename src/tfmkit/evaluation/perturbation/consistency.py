"""Perturbation consistency (TxFM §B.1 "Perturbation Consistency", p.cst).

For a perturbation ``p`` with cells ``x_i, i in I_p`` (all guides pooled):

* statistic: mean leave-one-out cosine
  ``s_p = (1/|I_p|) sum_{i in I_p} cos(x_i, mean_{j in I_p, j != i} x_j)``;
* null: ``N`` random cells ``x_r`` (default 10,000, seeded, drawn from all cells) against every
  perturbation mean, ``{cos(x_r, mean_{I_q} x) : q != label(r)}`` (self pairs removed);
* empirical p-value ``p_p = (1 + #{null >= s_p}) / (1 + |null|)``;
* score = ``100 * mean_p 1[p_p < alpha]`` (``alpha = 0.01``), the percent of significantly
  consistent perturbations.

The benchmark applies :func:`~tfmkit.evaluation.perturbation.postprocess.align_for_consistency`
(PCA fit on controls, per-batch standardisation) before calling this function. Because ``s_p``
averages ``|I_p|`` cosines while the null holds single cosines, the test is conservative: with
embeddings that carry no perturbation signal the score is at or below ``alpha`` (typically 0),
which matches the random-label rows of TxFM Table 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

N_NULL = 10_000
ALPHA = 0.01


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def consistency_statistics(X, labels, *, is_control=None, n_null: int = N_NULL, seed: int = 0
                           ) -> tuple[pd.Series, np.ndarray]:
    """Per-perturbation statistic ``s_p`` (Series indexed by perturbation) and the sorted null.

    ``X`` ``(N, D)``, ``labels`` ``(N,)``; cells flagged by ``is_control`` are never scored but
    can be drawn into the null. Perturbations with fewer than two cells have no leave-one-out
    cosine and are left out.
    """
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) != len(X):
        raise TfmkitError(f"labels has {len(labels)} entries for {len(X)} cells")
    ctrl = np.zeros(len(X), bool) if is_control is None else np.asarray(is_control, bool)
    perts, counts = np.unique(labels[~ctrl], return_counts=True)
    perts = perts[counts >= 2]
    if len(perts) == 0:
        raise TfmkitError("perturbation consistency needs at least one perturbation with >= 2 cells")
    code = pd.Index(perts).get_indexer(labels)  # -1 for controls / singletons
    code[ctrl] = -1
    D = X.shape[1]
    sums = np.zeros((len(perts), D), np.float64)
    np.add.at(sums, code[code >= 0], X[code >= 0])
    n = np.bincount(code[code >= 0], minlength=len(perts)).astype(np.float64)
    unit_means = _unit((sums / n[:, None]).astype(np.float32))  # (P, D)

    # leave-one-out cosines: cos(x_i, S_p - x_i) (the 1/(n-1) factor does not change a cosine)
    rows = np.flatnonzero(code >= 0)
    loo = _unit((sums[code[rows]] - X[rows]).astype(np.float32))  # (n_cells, D)
    cos = np.einsum("nd,nd->n", _unit(X[rows]), loo)
    stat = np.bincount(code[rows], weights=cos, minlength=len(perts)) / n

    rng = np.random.default_rng(seed)
    draw = rng.choice(len(X), size=n_null, replace=n_null > len(X))
    null = _unit(X[draw]) @ unit_means.T  # (n_null, P)
    keep = code[draw][:, None] != np.arange(len(perts))[None, :]
    return pd.Series(stat, index=perts, name="loo_cosine"), np.sort(null[keep])


def consistency_pvalues(X, labels, *, is_control=None, n_null: int = N_NULL, seed: int = 0) -> pd.Series:
    """Empirical p-value of every perturbation's mean leave-one-out cosine against the null."""
    stat, null = consistency_statistics(X, labels, is_control=is_control, n_null=n_null, seed=seed)
    n_ge = len(null) - np.searchsorted(null, stat.to_numpy(), side="left")
    return pd.Series((1.0 + n_ge) / (1.0 + len(null)), index=stat.index, name="p_value")


def perturbation_consistency(X, labels, *, is_control=None, n_null: int = N_NULL,
                             alpha: float = ALPHA, seed: int = 0) -> float:
    """Percent of perturbations whose consistency p-value is below ``alpha``."""
    p = consistency_pvalues(X, labels, is_control=is_control, n_null=n_null, seed=seed)
    return 100.0 * float((p < alpha).mean())
