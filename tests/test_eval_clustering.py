"""Neighbour graph, UMAP connectivities, Leiden sweep, NMI/ARI and isolated-label F1 against
scikit-learn, scipy, umap and scib-metrics references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import clustering as C


def _blobs(n=300, d=8, k=4, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(size=(k, d)) * 6
    return centers[y] + spread * rng.normal(size=(n, d)), y


def test_exact_neighbors_match_brute_force():
    X, _ = _blobs()
    nn = C.exact_neighbors(X, 12, chunk_size=64)
    D = cdist(X, X)
    np.fill_diagonal(D, -1)
    ref = np.argsort(D, axis=1, kind="stable")[:, :12]
    assert np.array_equal(nn.indices, ref)
    np.fill_diagonal(D, 0)
    np.testing.assert_allclose(nn.distances, np.take_along_axis(D, ref, 1), atol=1e-10)
    assert (nn.indices[:, 0] == np.arange(len(X))).all()


def test_exact_neighbors_match_sklearn_float32():
    from sklearn.neighbors import NearestNeighbors

    X, _ = _blobs(seed=3)
    X = X.astype(np.float32)
    nn = C.exact_neighbors(X, 10)
    ref = NearestNeighbors(n_neighbors=10).fit(X).kneighbors(X, return_distance=False)
    assert (nn.indices == ref).mean() > 0.999


def test_umap_connectivities_match_umap():
    from umap.umap_ import fuzzy_simplicial_set
    from scipy.sparse import coo_matrix

    X, _ = _blobs(n=250, seed=1)
    nn = C.exact_neighbors(X, 15)
    ref = fuzzy_simplicial_set(coo_matrix(([], ([], [])), shape=(len(X), 1)), n_neighbors=15,
                               random_state=None, metric=None, knn_indices=nn.indices,
                               knn_dists=nn.distances, set_op_mix_ratio=1.0,
                               local_connectivity=1.0)[0]
    ours = C.umap_connectivities(nn)
    assert abs(ours - ref).max() < 1e-6
    assert ours.nnz == ref.nnz


def test_nmi_ari_match_scib_metrics():
    import scib_metrics

    X, y = _blobs(n=300, spread=3.0, seed=2)
    nn = C.exact_neighbors(X, 15)
    ref = scib_metrics.nmi_ari_cluster_labels_leiden(nn, y, n_jobs=1, seed=42)
    ours = C.nmi_ari_sweep(y, C.leiden_sweep(nn.knn_graph_connectivities, seed=42))
    assert ours["nmi"] == pytest.approx(ref["nmi"], abs=1e-6)
    assert ours["ari"] == pytest.approx(ref["ari"], abs=1e-6)
    ours2 = C.nmi_ari_sweep(y, C.leiden_sweep(C.umap_connectivities(nn), seed=42))
    assert ours2["nmi"] == pytest.approx(ref["nmi"], abs=1e-6)


def test_perfectly_separated_clusters_give_nmi_ari_one():
    X, y = _blobs(n=200, spread=0.05, seed=4)
    cl = C.leiden_sweep(C.umap_connectivities(C.exact_neighbors(X, 15)))
    res = C.nmi_ari_sweep(y, cl)
    assert res["nmi"] == pytest.approx(1.0) and res["ari"] == pytest.approx(1.0)


def test_nmi_ari_sweep_picks_max_nmi():
    from sklearn.metrics import normalized_mutual_info_score

    y = np.repeat([0, 1, 2], 10)
    cls = [np.zeros(30, int), y.copy(), np.arange(30) % 2]
    res = C.nmi_ari_sweep(y, cls)
    assert res["best_index"] == 1 and res["nmi"] == 1.0
    assert res["nmi"] == max(normalized_mutual_info_score(y, c) for c in cls)


def test_isolated_label_names_match_scib():
    from scib_metrics.metrics._isolated_labels import _get_isolated_labels

    rng = np.random.default_rng(0)
    labels = rng.choice(list("abcde"), 200)
    batches = rng.choice(["x", "y", "z"], 200)
    batches[labels == "a"] = "x"
    batches[labels == "b"] = rng.choice(["x", "y"], (labels == "b").sum())
    assert set(C.isolated_label_names(labels, batches)) == set(_get_isolated_labels(labels, batches, None))
    assert set(C.isolated_label_names(labels, batches, 2)) == {"a", "b"}


def test_isolated_label_f1_matches_brute_force():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    labels = rng.choice(list("abcd"), 150)
    batches = rng.choice(["x", "y"], 150)
    batches[labels == "a"] = "x"
    clusterings = [rng.integers(0, k, 150) for k in (3, 5, 8)]
    ref = max(f1_score(labels == "a", c == cl) for c in clusterings for cl in np.unique(c))
    assert C.isolated_label_f1(labels, batches, clusterings) == pytest.approx(ref, abs=1e-12)
    perfect = [(labels == "a").astype(int)]
    assert C.isolated_label_f1(labels, batches, perfect) == 1.0


def test_bad_embeddings_raise():
    with pytest.raises(TfmkitError, match=r"contains NaN or infinite values"):
        C.exact_neighbors(np.array([[0.0, np.nan], [1, 1], [2, 2]]), 2)
    with pytest.raises(TfmkitError, match=r"need at least 3 cells for a neighbour graph, got 2"):
        C.exact_neighbors(np.zeros((2, 3)), 2)
    with pytest.raises(TfmkitError, match=r"must be a 2-D \(cells, dims\) array"):
        C.exact_neighbors(np.zeros(5), 2)
