"""Significance tests of TxFM §C, as pure functions (used by the ablation runner).

Thin, documented wrappers over statsmodels / scipy that handle the degenerate cases an
ablation table meets (equal proportions, constant samples, NaN metrics).
"""

from __future__ import annotations

import numpy as np

from tfmkit.errors import TfmkitError


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided pooled two-proportion z-test (``statsmodels`` ``proportions_ztest``):
    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))``, ``p = (x1 + x2) / (n1 + n2)``.
    Returns the p-value; 1.0 when both proportions are equal (incl. both 0 or both 1)."""
    from statsmodels.stats.proportion import proportions_ztest

    if min(n1, n2) <= 0 or not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise TfmkitError(f"z-test needs 0 <= x <= n and n > 0, got {x1}/{n1} and {x2}/{n2}")
    if x1 * n2 == x2 * n1:
        return 1.0
    return float(proportions_ztest([x1, x2], [n1, n2], alternative="two-sided")[1])


def welch_ttest(a, b) -> float:
    """Two-sided Welch t-test p-value (``scipy.stats.ttest_ind(equal_var=False)``); NaN with
    fewer than 2 values per side or zero variance on both sides with different means; 1.0 for
    identical constant samples."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if a.var() == 0 and b.var() == 0:
        return 1.0 if a.mean() == b.mean() else float("nan")
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def benjamini_hochberg(pvalues) -> np.ndarray:
    """BH-adjusted p-values (``statsmodels`` ``multipletests(method="fdr_bh")``); NaN entries
    stay NaN and are not counted as tests."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out
