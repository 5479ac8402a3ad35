"""Pretraining quality metrics against scipy / brute force and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import pretraining_quality as PQ


def test_spearman_equals_scipy_with_ties_and_masks():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(20, 60))
    pred[:, :5] = 0.0  # ties in predictions too
    counts = rng.poisson(0.7, size=(20, 60)).astype(float)  # many tied zeros
    mask = rng.random((20, 60)) > 0.3
    ours = PQ.spearman_per_cell(pred, counts, mask)
    for r in range(20):
        m = mask[r]
        ref = spearmanr(pred[r, m], counts[r, m]).statistic
        assert ours[r] == pytest.approx(ref, abs=1e-10)
    full = PQ.spearman_per_cell(pred, counts)
    assert full[3] == pytest.approx(spearmanr(pred[3], counts[3]).statistic, abs=1e-10)


def test_spearman_constant_row_is_nan():
    out = PQ.spearman_per_cell(np.ones((1, 5)), np.arange(5.0)[None])
    assert np.isnan(out[0])


def test_binary_correctness_known_answer_and_brute_force():
    counts = np.array([[5, 0, 3, 0, 0, 1]], float)
    perfect = np.array([[9, 0, 8, 1, 2, 7]], float)
    assert PQ.binary_correctness_per_cell(perfect, counts)[0] == 1.0
    worst = -perfect
    assert PQ.binary_correctness_per_cell(worst, counts)[0] == 0.0
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(15, 40))
    cnt = rng.poisson(0.5, size=(15, 40))
    mask = rng.random((15, 40)) > 0.2
    ours = PQ.binary_correctness_per_cell(pred, cnt, mask)
    for r in range(15):
        idx = np.flatnonzero(mask[r])
        expr = set(idx[cnt[r, idx] > 0])
        top = set(idx[np.argsort(-pred[r, idx], kind="stable")[:len(expr)]])
        ref = len(expr & top) / len(expr) if expr else np.nan
        assert ours[r] == pytest.approx(ref, nan_ok=True)


def test_poisson_loss_matches_formula():
    rng = np.random.default_rng(2)
    pred, tgt = rng.random((4, 10)), rng.random((4, 10))
    mask = rng.random((4, 10)) > 0.3
    ref = [(np.exp(pred[r]) - pred[r] * np.exp(tgt[r]))[mask[r]].mean() for r in range(4)]
    np.testing.assert_allclose(PQ.poisson_loss_per_cell(pred, tgt, mask), ref, rtol=1e-10)


def test_reconstruction_metrics_keys_and_errors():
    rng = np.random.default_rng(3)
    counts = rng.poisson(1.0, size=(6, 30)).astype(np.float32)
    target = np.log1p(counts)
    rec = {"pred": target, "logits": target + 0.0, "target": target, "counts": counts,
           "observable": np.ones_like(counts, bool), "revealed": rng.random((6, 30)) > 0.5}
    out = PQ.reconstruction_metrics(rec)
    assert set(out) == {"poisson_loss", "spearman", "spearman_masked", "binary_correctness",
                        "binary_correctness_masked"}
    np.testing.assert_allclose(out["spearman"], 1.0)
    np.testing.assert_allclose(out["binary_correctness"], 1.0)
    with pytest.raises(TfmkitError, match=r"reconstruction result lacks"):
        PQ.reconstruction_metrics({"pred": target})
    with pytest.raises(TfmkitError, match=r"must be .* arrays of one shape"):
        PQ.spearman_per_cell(np.ones((2, 3)), np.ones((2, 4)))
