"""The six perturbation-benchmark tasks on constructed inputs with known answers."""

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Ridge, RidgeClassifier

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.consistency import (
    consistency_pvalues,
    consistency_statistics,
    perturbation_consistency,
)
from tfmkit.evaluation.perturbation.invertibility import (
    invertibility,
    spearman_columns,
    structural_integrity,
)
from tfmkit.evaluation.perturbation.lisi import ilisi
from tfmkit.evaluation.perturbation.recall import known_pair_matrix, relationship_recall
from tfmkit.evaluation.perturbation.ridge import BatchRidge
from tfmkit.evaluation.perturbation.separation import knn_retrieval, linear_probe, topk_accuracy


def _clustered(P=20, n=30, d=16, noise=0.05, n_batches=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(P, d))
    labels = np.repeat([f"g{i}" for i in range(P)], n)
    X = centres[np.repeat(np.arange(P), n)] + noise * rng.normal(size=(P * n, d))
    batches = np.tile(np.arange(n_batches), P * n // n_batches + 1)[: P * n].astype(str)
    return X.astype(np.float32), labels, batches


# ---- perturbation consistency -------------------------------------------------------------------

def test_consistency_perfect_clusters_is_100():
    X, labels, _ = _clustered()
    assert perturbation_consistency(X, labels, n_null=2000) == 100.0


def test_consistency_random_embeddings_at_most_false_positive_rate():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(100), 20).astype(str)
    X = rng.normal(size=(len(labels), 32)).astype(np.float32)
    scores = [perturbation_consistency(X, labels, seed=s) for s in range(3)]
    assert max(scores) <= 2.0  # <= the 1% false-positive rate (conservative test)
    # the null is calibrated: single leave-one-out cosines exceed its 99th percentile ~1% of the time
    stat, null = consistency_statistics(X, labels)
    thr = np.quantile(null, 0.99)
    single = []
    for p in np.unique(labels):
        Xp = X[labels == p]
        for i in range(len(Xp)):
            m = np.delete(Xp, i, 0).mean(0)
            single.append(Xp[i] @ m / np.linalg.norm(Xp[i]) / np.linalg.norm(m))
    assert 0.5 <= 100 * np.mean(np.asarray(single) > thr) <= 1.6


def test_consistency_pvalues_match_brute_force():
    rng = np.random.default_rng(2)
    labels = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 6 + ["ctrl"] * 5)
    ctrl = labels == "ctrl"
    X = rng.normal(size=(len(labels), 4)).astype(np.float32)
    X[labels == "a"] += 3
    p = consistency_pvalues(X, labels, is_control=ctrl, n_null=50, seed=3)
    # brute force with the same random cells
    draw = np.random.default_rng(3).choice(len(X), size=50, replace=True)
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    perts = ["a", "b", "c"]
    means = {q: X[labels == q].mean(0) for q in perts}
    null = [cos(X[r], means[q]) for r in draw for q in perts if labels[r] != q]
    for q in perts:
        Xq = X[labels == q]
        s = np.mean([cos(Xq[i], np.delete(Xq, i, 0).mean(0)) for i in range(len(Xq))])
        expected = (1 + np.sum(np.asarray(null) >= s - 1e-6)) / (1 + len(null))
        assert p[q] == pytest.approx(expected, abs=1.5 / len(null))
    assert "ctrl" not in p.index
    assert p["a"] < 0.05


def test_consistency_errors():
    with pytest.raises(TfmkitError, match=">= 2 cells"):
        perturbation_consistency(np.ones((3, 2)), ["a", "b", "c"])


# ---- relationship recall ------------------------------------------------------------------------

def test_known_pair_matrix():
    M = known_pair_matrix(["A", "B", "C", "D"], {"s1": ["A", "B", "X"], "s2": ["D", "C"], "s3": ["A"]})
    expected = np.zeros((4, 4), bool)
    expected[0, 1] = expected[2, 3] = True
    np.testing.assert_array_equal(M, expected)


def test_recall_planted_map_near_100_and_random_near_10():
    rng = np.random.default_rng(0)
    P, d = 120, 64
    genes = [f"G{i}" for i in range(P)]
    complexes = {f"c{k}": genes[3 * k: 3 * k + 3] for k in range(P // 3)}  # 40 triplets, 120 pairs
    centre = rng.normal(size=(P // 3, d))
    planted = centre[np.arange(P) // 3] + 0.1 * rng.normal(size=(P, d))
    rec = relationship_recall(planted, genes, {"corum": complexes})
    assert rec["corum"] >= 99.0 and rec["mean"] == rec["corum"]
    rand = [relationship_recall(rng.normal(size=(P, d)), genes, {"corum": complexes})["corum"]
            for _ in range(10)]
    assert 5.0 <= np.mean(rand) <= 15.0  # 2 x 5% tails
    anti = planted.copy()  # anti-correlated partners count too (bottom 5%)
    anti[1::3] *= -1
    assert relationship_recall(anti, genes, {"x": {"s": genes[:2]}})["x"] == 100.0
    assert np.isnan(relationship_recall(planted, genes, {"none": {"s": ["Q1", "Q2"]}})["none"])


# ---- linear probe / kNN retrieval ---------------------------------------------------------------

def test_batch_ridge_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    Y = X @ rng.normal(size=(8, 3)) + 0.1 * rng.normal(size=(300, 3))
    groups = np.repeat([0, 1, 2], 100)
    br = BatchRidge(X, groups, rel_alpha=0.05)
    br.add_target("y", Y)
    W, b = br.fit("y", [0, 2])
    train = groups != 1
    Xt = X[train] - X[train].mean(0)
    alpha = 0.05 * np.trace(Xt.T @ Xt) / 8
    ref = Ridge(alpha=alpha).fit(X[train], Y[train])
    np.testing.assert_allclose(W, ref.coef_.T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b, ref.intercept_, rtol=1e-3, atol=1e-4)


def test_topk_accuracy():
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    assert topk_accuracy(scores, np.array([2, 0, 0]), ks=(1, 2)) == {1: pytest.approx(100 / 3), 2: pytest.approx(200 / 3)}


def test_linear_probe_separable_random_and_sklearn():
    X, labels, batches = _clustered(P=10, n=30, noise=0.2)
    res = linear_probe(X, labels, batches, test_batches=["0"])
    assert res == {1: 100.0, 5: 100.0}
    # same top-1 as sklearn's RidgeClassifier with the same penalty
    train = batches != "0"
    Xt = X[train] - X[train].mean(0)
    clf = RidgeClassifier(alpha=1e-2 * np.trace(Xt.T @ Xt) / X.shape[1]).fit(X[train], labels[train])
    X2, _, _ = _clustered(P=10, n=30, noise=3.0, seed=5)
    res2 = linear_probe(X2, labels, batches, test_batches=["0"])
    clf = RidgeClassifier(alpha=1e-2 * np.trace((X2[train] - X2[train].mean(0)).T @ (X2[train] - X2[train].mean(0)))
                          / X2.shape[1]).fit(X2[train], labels[train])
    assert res2[1] == pytest.approx(100 * np.mean(clf.predict(X2[~train]) == labels[~train]), abs=1e-6)
    rng = np.random.default_rng(3)
    rnd = linear_probe(rng.normal(size=X.shape), labels, batches, test_batches=[["1"], ["2"]])
    assert all(r[1] < 30 for r in rnd)  # chance = 10%
    log = linear_probe(X, labels, batches, test_batches=["0"], method="logistic")
    assert log[1] == 100.0


def test_knn_retrieval_clusters_and_controls_excluded():
    X, labels, batches = _clustered(P=10, n=40, noise=0.1, n_batches=4)
    assert knn_retrieval(X, labels, batches, query_batches=["0", "1"]) == {1: 100.0, 5: 100.0}
    rng = np.random.default_rng(0)
    r = knn_retrieval(rng.normal(size=X.shape), labels, batches, query_batches=["0", "1"])
    assert r[1] < 25 and r[5] < 70  # chance 10% / ~41%
    with pytest.raises(TfmkitError, match=r"kNN retrieval needs cells in both the query and the reference"):
        knn_retrieval(X, labels, batches, query_batches=["0", "1", "2", "3"])


# ---- iLISI --------------------------------------------------------------------------------------

def test_ilisi_mixed_vs_separated():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    b = np.tile(["a", "b", "c"], 200)
    assert ilisi(X, b) > 80  # perplexity 30: finite-neighbourhood bias keeps it below 100
    Xs = X + 50 * (np.searchsorted(["a", "b", "c"], b)[:, None])
    assert ilisi(Xs, b) < 1
    with pytest.raises(TfmkitError, match=r"iLISI needs at least two batches"):
        ilisi(X, np.zeros(600))


# ---- invertibility ------------------------------------------------------------------------------

def test_spearman_columns_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.poisson(1.0, size=(50, 4)).astype(float)
    p = a + rng.normal(size=a.shape)
    ref = [scipy.stats.spearmanr(p[:, j], a[:, j])[0] for j in range(4)]
    np.testing.assert_allclose(spearman_columns(p, a), ref, atol=1e-10)
    a[:, 0] = 1.0
    assert np.isnan(spearman_columns(p, a)[0])


def test_structural_integrity_known_values():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(90, 5))
    b = np.repeat(["x", "y", "z"], 30)
    c = np.tile(np.arange(30) < 5, 3)
    assert structural_integrity(Y, Y, b, c) == pytest.approx(100.0)
    assert structural_integrity(Y + 7.0, Y, b, c) == pytest.approx(100.0)  # offsets cancel
    ctrl_only = np.zeros_like(Y)  # the control profile for every cell
    assert structural_integrity(ctrl_only, Y, b, c) == pytest.approx(50.0)
    flipped = np.empty_like(Y)
    for bt in "xyz":
        r = b == bt
        flipped[r] = -(Y[r] - Y[r & c].mean(0))
    assert structural_integrity(flipped, Y, b, c) == pytest.approx(0.0, abs=1e-9)


def test_invertibility_identity_vs_random():
    rng = np.random.default_rng(0)
    n, G = 400, 20
    Y = rng.normal(size=(n, G)).astype(np.float32)
    b = np.tile(["a", "b", "c", "d"], n // 4)
    c = rng.random(n) < 0.2
    Q = np.linalg.qr(rng.normal(size=(G, G)))[0]  # a rotation: linearly invertible embedding
    good = invertibility(Y @ Q, Y, b, c)
    assert good["spearman"] > 99 and good["structural_integrity"] > 98
    bad = invertibility(rng.normal(size=(n, 8)), Y, b, c)
    assert abs(bad["spearman"]) < 10 and bad["structural_integrity"] < 55
    with pytest.raises(TfmkitError, match="2 batches"):
        invertibility(Y, Y, np.zeros(n), c)
