"""Baselines are what their names say (issue 12, items 5-6): ``raw`` / ``lognorm`` use every
gene, and the reconstruction ``gene_mean`` prior never sees the cell it scores."""

import numpy as np
import pytest
import scipy.sparse as sp

from tfmkit.data.normalize import lognorm
from tfmkit.errors import TfmkitError
from tfmkit.evaluation import pretraining_quality as PQ
from tfmkit.evaluation.baselines import baseline_embedding
from tfmkit.evaluation.runners import _mean_profile


def test_raw_and_lognorm_keep_every_gene():
    X = sp.random(20, 6000, density=0.05, random_state=0, format="csr") * 10
    X.data = np.round(X.data) + 1
    raw = baseline_embedding(X, "raw")
    assert raw.shape == (20, 6000) and np.array_equal(raw, X.toarray().astype(np.float32))
    np.testing.assert_allclose(baseline_embedding(X, "lognorm"), lognorm(X).toarray(), rtol=1e-6)
    with pytest.raises(TfmkitError, match="would densify more than 1,000 values; use hvg5000 or pca50"):
        baseline_embedding(X, "lognorm", max_dense_values=1000)


def _rec(target, observable):
    c = np.expm1(target)
    return dict(pred=target, logits=target, target=target, counts=c, observable=observable,
                revealed=np.zeros_like(observable))


def test_gene_mean_is_leave_one_out():
    rng = np.random.default_rng(1)
    t = np.log1p(rng.poisson(3, (5, 4)).astype(float))
    obs = np.ones((5, 4), bool)
    obs[0, 1] = obs[2, 3] = False
    r = _mean_profile(_rec(t, obs))
    for i in range(5):
        for g in range(4):
            others = [j for j in range(5) if j != i and obs[j, g]]
            assert r["pred"][i, g] == pytest.approx(np.mean(t[others, g]), rel=1e-6)
    assert r["observable"].sum() == obs.sum()  # every observed gene has a prior from other cells


def test_gene_mean_on_one_cell_has_no_prior_and_no_perfect_score():
    t = np.log1p(np.array([[0.0, 3.0, 1.0, 7.0]]))
    m = PQ.reconstruction_metrics(_mean_profile(_rec(t, np.ones((1, 4), bool))))
    assert np.isnan(m["spearman"]).all() and np.isnan(m["binary_correctness"]).all()
