"""Silhouette family, LISI and graph connectivity against scikit-learn / scib-metrics and
constructed cases (perfect separation, shuffled labels, a single batch)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_samples

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import clustering as C
from tfmkit.evaluation import integration as I


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 240
    labels = rng.choice(list("abcd"), n)
    batches = rng.choice(["b1", "b2", "b3"], n)
    labels[:3] = "z"  # a small label present in one batch
    batches[:3] = "b1"
    centers = {c: rng.normal(size=6) * 3 for c in "abcdz"}
    X = np.stack([centers[c] for c in labels]) + rng.normal(size=(n, 6))
    X += 0.7 * (batches == "b2")[:, None]
    return X, labels, batches


def test_asw_label_matches_sklearn(data):
    X, labels, _ = data
    ref = (silhouette_samples(X, labels).mean() + 1) / 2
    assert I.silhouette_label(X, labels) == pytest.approx(ref, abs=1e-6)


def test_asw_label_batch_matches_per_batch_sklearn(data):
    X, labels, batches = data
    per = [silhouette_samples(X[batches == b], labels[batches == b]) for b in np.unique(batches)]
    ref = (np.concatenate(per).mean() + 1) / 2
    assert I.silhouette_label_batch(X, labels, batches) == pytest.approx(ref, abs=1e-6)


def test_asw_batch_matches_sklearn_definition_and_scib(data):
    import scib_metrics

    X, labels, batches = data
    per_label = []
    for lab in np.unique(labels):
        m = labels == lab
        if len(np.unique(batches[m])) < 2:
            continue
        per_label.append(np.mean(1 - np.abs(silhouette_samples(X[m], batches[m]))))
    assert I.silhouette_batch(X, labels, batches) == pytest.approx(np.mean(per_label), abs=1e-6)
    ref = scib_metrics.silhouette_batch(X.astype(np.float32), labels, batches)
    assert I.silhouette_batch(X, labels, batches) == pytest.approx(float(ref), abs=1e-5)


def test_isolated_label_asw_matches_scib(data):
    import scib_metrics

    X, labels, batches = data
    sil = (silhouette_samples(X, labels) + 1) / 2
    assert I.isolated_label_asw(X, labels, batches) == pytest.approx(sil[labels == "z"].mean(), abs=1e-6)
    ref = scib_metrics.isolated_labels(X.astype(np.float32), labels, batches)
    assert I.isolated_label_asw(X, labels, batches) == pytest.approx(float(ref), abs=1e-5)


def test_single_batch_reduces_asw_label_batch_to_asw_label(data):
    X, labels, _ = data
    one = np.zeros(len(labels), int)
    assert I.silhouette_label_batch(X, labels, one) == pytest.approx(I.silhouette_label(X, labels), abs=1e-12)
    assert np.isnan(I.silhouette_batch(X, labels, one))
    nn = C.exact_neighbors(X, 30)
    with pytest.raises(TfmkitError, match=r"iLISI needs at least two batches"):
        I.ilisi(nn, one)


def test_perfect_separation_and_shuffled_labels():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 40)
    X = np.eye(3)[y] * 100 + rng.normal(size=(120, 3)) * 0.01
    nn = C.exact_neighbors(X, 30)
    assert I.silhouette_label(X, y) == pytest.approx(1.0, abs=1e-3)
    assert I.clisi(nn, y) == pytest.approx(1.0, abs=1e-6)
    assert I.graph_connectivity(nn, y) == 1.0
    y_shuf = rng.permutation(y)
    assert abs(I.silhouette_label(X, y_shuf) - 0.5) < 0.05
    assert I.clisi(nn, y_shuf) < 0.5


def test_ilisi_mixed_vs_separated_batches():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    mixed = rng.integers(0, 2, 200)
    nn = C.exact_neighbors(X, 30)
    assert I.ilisi(nn, mixed) > 0.8
    Xs = X + 50 * mixed[:, None]
    assert I.ilisi(C.exact_neighbors(Xs, 30), mixed) == pytest.approx(0.0, abs=1e-6)


def test_lisi_and_graph_connectivity_are_scib_metrics(data):
    import scib_metrics

    X, labels, batches = data
    nn = C.exact_neighbors(X, 30)
    assert I.ilisi(nn, batches) == pytest.approx(float(scib_metrics.ilisi_knn(nn, batches)))
    assert I.clisi(nn, labels) == pytest.approx(float(scib_metrics.clisi_knn(nn, labels)))


def test_bad_inputs_raise(data):
    X, labels, batches = data
    with pytest.raises(TfmkitError, match=r"labels must have one entry per cell"):
        I.silhouette_label(X, labels[:-1])
    lab = labels.astype(object)
    lab[0] = None
    with pytest.raises(TfmkitError, match=r"labels contain missing values"):
        I.silhouette_label(X, lab)
