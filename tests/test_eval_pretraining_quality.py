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


# ---- top-expressed context (GPL Suppl. D) for every family with gene_logits -----------------
from conftest import GENES, make_counts  # noqa: E402

FAMILY_CONFIGS = ["txfm_tiny", "bmfm_wced_tiny", "bmfm_multitask_tiny", "gpl_ar_tiny"]


def _tiny_model(name, tmp_path, data):
    from dataclasses import fields

    from tfmkit import load_model
    from tfmkit.config import load_config
    from tfmkit.models import family_class
    from tfmkit.training import pretrain

    family = load_config(name).model.family
    names = {f.name for f in fields(family_class(family).config_class)}
    ov = [f"model.{k}={v}" for k, v in {"dim": 32, "depth": 1, "heads": 2}.items() if k in names]
    ov += ["data.n_revealed=12", "data.min_cells=1", "data.val_fraction=0", "train.batch_size=8",
           "train.steps=2", "train.checkpoint_every=2", "train.val_every=0"]
    return load_model(pretrain(load_config(name, ov), tmp_path / name, adatas=data, progress=False))


def _brute_force_top(counts, observable, fraction, cap):
    """Per cell: its round(f · n_expressed) (1..cap) highest-count genes, ties by index."""
    out = np.zeros(counts.shape, bool)
    for i in range(len(counts)):
        expr = [g for g in range(counts.shape[1]) if observable[i, g] and counts[i, g] > 0]
        n = min(cap, max(1, int(np.floor(fraction * len(expr) + 0.5))), len(expr))
        ranked = sorted(expr, key=lambda g: (-counts[i, g], g))
        out[i, ranked[:n]] = True
    return out


@pytest.mark.parametrize("config", FAMILY_CONFIGS)
def test_top_reveal_shows_each_cells_most_expressed_genes(config, tmp_path):
    from tfmkit.inference import reconstruct

    data = {"a": make_counts(40, GENES[:30], seed=1)}
    model = _tiny_model(config, tmp_path, data)
    held = make_counts(12, GENES[:30], seed=7)
    for fraction, cap in ((0.5, None), (0.1, None), (1.0, 5)):
        rec = reconstruct(held, model, reveal="top", context_fraction=fraction, n_revealed=cap)
        want = _brute_force_top(rec["counts"], rec["observable"], fraction, cap or 12)
        np.testing.assert_array_equal(rec["revealed"], want)
        assert rec["logits"].shape == rec["counts"].shape and np.isfinite(rec["logits"]).all()
    # deterministic: the same context whatever the seed or batch size
    a = reconstruct(held, model, reveal="top", context_fraction=0.5, seed=0, batch_size=5)
    b = reconstruct(held, model, reveal="top", context_fraction=0.5, seed=3, batch_size=64)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)
    with pytest.raises(TfmkitError, match=r"context_fraction must be in \(0, 1\]"):
        reconstruct(held, model, reveal="top", context_fraction=1.5)
    with pytest.raises(TfmkitError, match="reveal must be one of random, top"):
        reconstruct(held, model, reveal="bottom")
    with pytest.raises(TfmkitError, match="context_fraction applies to reveal='top'"):
        reconstruct(held, model, context_fraction=0.5)


def test_top_reveal_ar_logits_are_those_at_the_masking_boundary(tmp_path):
    """GPL Suppl. D.1 step 3: the prediction is the causal model's output after the context,
    i.e. position n-1 of the cell's whole descending sequence."""
    import torch

    from tfmkit.data.corpus import Corpus
    from tfmkit.inference import reconstruct
    from tfmkit.tasks import build_task

    model = _tiny_model("gpl_ar_tiny", tmp_path, {"a": make_counts(40, GENES[:30], seed=1)})
    held = make_counts(6, GENES[:30], seed=7)
    rec = reconstruct(held, model, reveal="top", context_fraction=0.5, n_revealed=30)
    corpus = Corpus.from_adata_for_inference(held, model.vocab)
    whole = build_task(model.run_config, model.vocab.n_genes).inference_collator(
        corpus, 30, reveal="top")(corpus, np.arange(held.n_obs), torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_pos = model.module(whole).token_outputs["gene_logits"]  # (B, T, G)
    n_ctx = rec["revealed"].sum(1)
    for i in range(held.n_obs):
        np.testing.assert_allclose(rec["logits"][i], per_pos[i, n_ctx[i] - 1].numpy(), rtol=1e-4, atol=1e-5)


def test_reconstruct_refuses_a_model_without_gene_logits(tmp_path):
    from tfmkit.inference import reconstruct

    model = _tiny_model("bmfm_mlm_tiny", tmp_path, {"a": make_counts(40, GENES[:30], seed=1)})
    with pytest.raises(TfmkitError, match="does not predict per-gene expression; reconstruction needs gene_logits"):
        reconstruct(make_counts(5, GENES[:30], seed=7), model, reveal="top", context_fraction=0.5)


def test_top_expressed_and_context_sizes_by_hand():
    import torch

    from tfmkit.tasks.pretrain import context_sizes, top_expressed

    counts = torch.tensor([[0., 5., 2., 5., 1.], [0., 0., 0., 0., 0.]])
    observable = torch.tensor([[True, True, True, True, False], [False, True, True, True, True]])
    n = context_sizes(torch.tensor([3, 0]), max_tokens=10, context_fraction=0.5)
    assert n.tolist() == [2, 1]  # floor(1.5 + 0.5) = 2; at least 1
    idx, valid = top_expressed(counts, observable, n)
    assert idx[0, :2].tolist() == [1, 3]  # ties (5, 5) by vocabulary index; gene 4 unobservable
    assert valid.tolist() == [[True, True], [True, False]] and idx[1, 0].item() == 1  # no expressed: one observable zero
