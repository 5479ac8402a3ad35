"""Bounded cost of the benchmarks (issue 13, item 5): seeded ``--max-cells`` subsampling, the
streamed gene-mean baseline, and the memory-bounded neighbour / cosine computations give the
same numbers as the direct computations they replace."""

from __future__ import annotations

import numpy as np
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.subsample import subsample_cells


def test_subsample_is_seeded_and_bounded():
    a = subsample_cells(1000, 100, seed=1)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, subsample_cells(1000, 100, seed=1))
    assert not np.array_equal(a, subsample_cells(1000, 100, seed=2))
    assert np.array_equal(subsample_cells(50, 100), np.arange(50))
    assert np.array_equal(subsample_cells(50, None), np.arange(50))


def test_stratified_subsample_keeps_every_label_and_the_proportions():
    rng = np.random.default_rng(0)
    labels = np.array(["a"] * 700 + ["b"] * 250 + ["c"] * 47 + ["rare"] * 3)
    rng.shuffle(labels)
    idx = subsample_cells(len(labels), 200, seed=5, labels=labels)
    assert np.array_equal(idx, subsample_cells(len(labels), 200, seed=5, labels=labels))
    got = dict(zip(*np.unique(labels[idx], return_counts=True)))
    assert sum(got.values()) == 200
    assert got["rare"] == 3  # a label smaller than the floor keeps all its cells
    assert got["c"] == 10  # the floor (its share would be 9.4)
    # the rest in proportion to the label sizes (largest remainder): 700 : 250 of the 187 left
    assert abs(got["a"] - 187 * 700 / 950) <= 1 and abs(got["b"] - 187 * 250 / 950) <= 1


def test_bad_max_cells_is_one_line_error():
    with pytest.raises(TfmkitError, match=r"--max-cells must be a positive number of cells .* got 0"):
        subsample_cells(10, 0)
    with pytest.raises(TfmkitError, match=r"--max-cells 15 cannot keep 10 cells of each of the 2 "
                                          r"labels; pass --max-cells 20 or more"):
        subsample_cells(100, 15, labels=np.repeat(["x", "y"], 50))


def test_streamed_gene_mean_equals_the_whole_matrix_baseline():
    """Totals accumulated batch by batch give bit-identical leave-one-out predictions and
    metrics to the baseline computed on all cells at once."""
    from tfmkit.evaluation import pretraining_quality as PQ
    from tfmkit.evaluation.pretraining_benchmark import _score_gene_mean, _score_model, mean_profile

    rng = np.random.default_rng(3)
    n, g = 150, 40
    counts = rng.poisson(rng.gamma(0.5, 2.0, g), (n, g)).astype(np.float32)  # (N, G)
    target = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    obs = rng.random((n, g)) > 0.05
    rec = dict(pred=target, logits=target + rng.normal(0, 0.1, (n, g)).astype(np.float32),
               target=target, counts=counts, observable=obs, revealed=rng.random((n, g)) > 0.7,
               n_tokens=np.full(n, 7))
    batches = [{k: v[s:s + 32] for k, v in rec.items()} for s in range(0, n, 32)]
    _, totals, tokens = _score_model(iter(batches))
    assert np.array_equal(totals[0], np.where(obs, target, 0.0).sum(0)) and (tokens == 7).all()
    streamed = _score_gene_mean(iter(batches), *totals)
    whole = PQ.reconstruction_metrics(mean_profile(rec))
    for metric, values in whole.items():
        np.testing.assert_array_equal(streamed[metric], values)


def test_neighbour_distances_in_bounded_blocks_match_brute_force(monkeypatch):
    """Wide inputs: the exact distances of the k-NN are recomputed in row blocks (forced tiny
    here) and still equal the brute-force pairwise distances (scipy ``cdist``)."""
    from scipy.spatial.distance import cdist

    from tfmkit.evaluation import clustering as C

    monkeypatch.setattr(C, "_DIFF_BLOCK", 5 * 7 * 3000)  # 5 cells' neighbour differences per block
    rng = np.random.default_rng(0)
    X = (rng.random((120, 3000)) < 0.1) * rng.random((120, 3000))  # (N, G) float64
    nn = C.exact_neighbors(X, 7, chunk_size=50)
    D = cdist(X, X)  # (N, N)
    ref = np.argsort(D, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(nn.indices, ref)
    np.testing.assert_allclose(nn.distances, np.take_along_axis(D, ref, 1), atol=1e-12)


def test_one_distance_pass_for_several_labelings_equals_one_each():
    from tfmkit.evaluation import integration as I

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    y = rng.choice(list("abc"), 90)
    z = rng.permutation(y)
    b = rng.choice(["p", "q"], 90)
    sums, labs, bat, nn = I.distance_summaries(X, [y, z], b, n_neighbors=10, chunk_size=32)
    for S, labels in zip(sums, (y, z)):
        S1, lab1, bat1, nn1 = I.distance_summary(X, labels, b, n_neighbors=10, chunk_size=32)
        np.testing.assert_array_equal(S, S1)
        np.testing.assert_array_equal(nn.indices, nn1.indices)


def test_pair_cosines_in_small_chunks_equal_brute_force():
    from tfmkit.evaluation.gene_recall import pair_cosines

    rng = np.random.default_rng(2)
    E = rng.normal(size=(50, 16))
    i, j = rng.integers(0, 50, 333), rng.integers(0, 50, 333)
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    ref = (U[i] * U[j]).sum(1)
    np.testing.assert_allclose(pair_cosines(E, i, j, chunk_values=16 * 10), ref, rtol=1e-12)
    np.testing.assert_array_equal(pair_cosines(E, i, j, chunk_values=16 * 10), pair_cosines(E, i, j))
