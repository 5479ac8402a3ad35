"""Post-processing on controls: centre, standardise, TVN, consistency alignment."""

import numpy as np
import pytest
import scipy.linalg
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.postprocess import (
    align_for_consistency,
    center_on_controls,
    postprocess,
    standardize_on_controls,
    tvn,
)


def _data(seed=0, n=600, d=6, n_batches=3):
    rng = np.random.default_rng(seed)
    batches = np.repeat(np.arange(n_batches), n // n_batches).astype(str)
    ctrl = rng.random(n) < 0.4
    A = rng.normal(size=(d, d))
    X = rng.normal(size=(n, d)) @ A  # correlated features
    X += np.array([rng.normal(0, 3, d) for _ in range(n_batches)])[np.repeat(np.arange(n_batches), n // n_batches)]
    X[~ctrl] += 2.0  # perturbed cells shifted
    return X.astype(np.float32), batches, ctrl


def _reference_tvn(X, batches, ctrl, reg=0.5):
    """Public reference recipe (sklearn StandardScaler / PCA, scipy fractional power)."""
    X = StandardScaler().fit(X[ctrl]).transform(X)
    X = PCA().fit(X[ctrl]).transform(X)
    for b in np.unique(batches):
        r = batches == b
        X[r] = StandardScaler().fit(X[r & ctrl]).transform(X[r])
    for b in np.unique(batches):
        r = batches == b
        C = np.cov(X[r & ctrl], rowvar=False, ddof=1) + reg * np.eye(X.shape[1])
        X[r] = X[r] @ np.real(scipy.linalg.fractional_matrix_power(C, -0.5))
    return X


def test_center_and_standardize_on_controls():
    X, b, c = _data()
    Zc = center_on_controls(X, b, c)
    Zs = standardize_on_controls(X, b, c)
    for bt in np.unique(b):
        r = b == bt
        np.testing.assert_allclose(Zc[r & c].mean(0), 0, atol=1e-4)
        ref = StandardScaler().fit(X[r & c]).transform(X[r])
        np.testing.assert_allclose(Zs[r], ref, rtol=1e-4, atol=1e-4)
    # perturbed cells keep their shift relative to controls
    assert Zc[~c].mean() > 1.5


def test_tvn_matches_reference_and_whitens_controls():
    X, b, c = _data(1)
    np.testing.assert_allclose(tvn(X, b, c), _reference_tvn(X.astype(np.float64), b, c), atol=2e-3)
    Z = tvn(X, b, c, reg=0.0)  # exact whitening: control covariance = I in every batch
    for bt in np.unique(b):
        cov = np.cov(Z[(b == bt) & c], rowvar=False)
        np.testing.assert_allclose(cov, np.eye(X.shape[1]), atol=1e-3)
    Z = tvn(X, b, c)  # with the 0.5 I shrinkage: eigenvalues l / (l + 0.5) of the standardised cov
    for bt in np.unique(b):
        cov = np.cov(Z[(b == bt) & c], rowvar=False)
        assert np.all(np.linalg.eigvalsh(cov) < 1.0) and np.all(np.linalg.eigvalsh(cov) > 0.0)
        np.testing.assert_allclose(np.trace(cov) / len(cov), 1.0 / 1.5, atol=0.15)


def test_align_for_consistency_standardises_controls_per_batch():
    X, b, c = _data(2)
    Z = align_for_consistency(X, b, c)
    for bt in np.unique(b):
        r = (b == bt) & c
        np.testing.assert_allclose(Z[r].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(Z[r].std(0), 1, atol=1e-3)


def test_postprocess_errors():
    X, b, c = _data()
    c2 = c.copy()
    c2[b == "1"] = False
    with pytest.raises(TfmkitError, match="batch '1' has no control"):
        center_on_controls(X, b, c2)
    with pytest.raises(TfmkitError, match="no control cells"):
        tvn(X, b, np.zeros(len(X), bool))
    with pytest.raises(TfmkitError, match="boolean"):
        standardize_on_controls(X, b, c.astype(str))
    with pytest.raises(TfmkitError, match="unknown post-processing"):
        postprocess(X, b, c, "zscore")
