"""All cell-type metrics from one pass: constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.metrics_celltype import METRIC_TASKS, celltype_metrics, subsample


def _separated(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["t0", "t1", "t2"], n // 3)
    X = np.eye(3)[np.searchsorted(["t0", "t1", "t2"], y)] * 50 + rng.normal(size=(n, 3)) * 0.1
    b = rng.choice(["b0", "b1"], n)
    return X, y, b


def test_perfectly_separated_labels():
    X, y, b = _separated()
    m = celltype_metrics(X, y, b)
    assert set(m) == set(METRIC_TASKS)
    for key in ("nmi", "ari", "clisi", "isolated_label_f1"):
        assert m[key] == pytest.approx(1.0, abs=1e-6), key
    assert m["graph_connectivity"] > 0.98  # strong components of a directed 15-NN graph
    assert m["asw_label"] > 0.99 and m["asw_label_batch"] > 0.99
    assert m["asw_batch"] > 0.9 and m["ilisi"] > 0.8  # batches are random within clusters


def test_shuffled_labels_are_near_chance():
    X, y, b = _separated()
    m = celltype_metrics(X, np.random.default_rng(1).permutation(y), b)
    assert m["nmi"] < 0.2 and abs(m["ari"]) < 0.1 and abs(m["asw_label"] - 0.5) < 0.05


def test_single_batch_leaves_out_batch_metrics():
    X, y, _ = _separated()
    m = celltype_metrics(X, y, np.zeros(len(y)))
    assert set(m) == {"nmi", "ari", "asw_label", "clisi", "graph_connectivity"}
    assert m == celltype_metrics(X, y, None)


def test_subsample_is_seeded_and_bounded():
    a, b = subsample(100, 30, 0), subsample(100, 30, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 30
    assert not np.array_equal(a, subsample(100, 30, 1))
    assert np.array_equal(subsample(20, 30, 0), np.arange(20))
    with pytest.raises(TfmkitError, match=r"n_cells must be positive, got 0"):
        subsample(10, 0, 0)


def test_one_label_raises():
    X, _, _ = _separated()
    with pytest.raises(TfmkitError, match=r"at least two distinct labels"):
        celltype_metrics(X, np.zeros(len(X)))


def test_batch_metrics_match_sklearn_and_scib():
    """Batch-only mode: asw_batch = mean(1 − |s_i(batch)|) over all cells; iLISI = scib-metrics."""
    import scib_metrics
    from sklearn.metrics import silhouette_samples

    from tfmkit.evaluation.clustering import exact_neighbors
    from tfmkit.evaluation.metrics_celltype import BATCH_ONLY_METRICS, batch_metrics

    X, _, b = _separated(120, seed=4)
    X = X.astype(np.float32)
    got = batch_metrics(X, b)
    assert tuple(sorted(got)) == BATCH_ONLY_METRICS
    assert got["asw_batch"] == pytest.approx(np.mean(1 - np.abs(silhouette_samples(X, b))), abs=1e-6)
    assert got["ilisi"] == pytest.approx(float(scib_metrics.ilisi_knn(exact_neighbors(X, 90), b)), abs=1e-6)
    with pytest.raises(TfmkitError, match="at least two distinct batches"):
        batch_metrics(X, np.zeros(len(X)))
