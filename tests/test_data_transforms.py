"""Batch transforms against numpy / scipy / brute-force references."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tfmkit.data import transforms as T
from tfmkit.data.masking import RevealSpec, sample_revealed
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_log1p_normalize_matches_numpy():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (6, 9)).astype(np.float32)
    lib = counts.sum(1) + rng.integers(0, 20, 6)  # library includes genes outside the vocabulary
    lib[2] = 0
    counts[2] = 0
    got = T.log1p_normalize(torch.from_numpy(counts), torch.from_numpy(lib.astype(np.float32)), 1e4)
    ref = np.log1p(1e4 * counts / np.where(lib > 0, lib, 1)[:, None])
    assert got.dtype == torch.float32 and got.shape == (6, 9)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)
    assert (got[2] == 0).all()


def test_reveal_wraps_sample_revealed():
    rng = np.random.default_rng(1)
    counts = torch.from_numpy(rng.poisson(0.7, (8, 12)).astype(np.float32))
    obs = torch.from_numpy(rng.random((8, 12)) < 0.7)
    w = torch.rand(12, generator=_gen(9)) + 0.1
    for spec, weights in ((RevealSpec(4), None), (RevealSpec(4, tau=1.0), w), (RevealSpec(4, expressed_only=True), None)):
        idx, valid = T.reveal(obs, spec, generator=_gen(3), gene_weights=weights, counts=counts)
        ref = sample_revealed(obs, 4, generator=_gen(3), weights=weights,
                              expressed=counts > 0 if spec.expressed_only else None)
        assert torch.equal(idx, ref[0]) and torch.equal(valid, ref[1])
    chosen_counts = counts.gather(1, idx)[valid]
    assert (chosen_counts > 0).all()  # expressed-only
    with pytest.raises(TfmkitError, match="expressed-only reveal sampling needs the batch counts"):
        T.reveal(obs, RevealSpec(4, expressed_only=True), generator=None)


def test_revealed_tokens_brute_force():
    target = torch.arange(15, dtype=torch.float32).reshape(3, 5) + 1
    idx = torch.tensor([[4, 1, 0], [2, 0, 0], [3, 4, 1]])
    valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    gene_ids, values, padding, revealed = T.revealed_tokens(target, idx, valid)
    for b in range(3):
        for k in range(3):
            if valid[b, k]:
                assert gene_ids[b, k] == idx[b, k] + GeneVocab.N_SPECIAL and values[b, k] == target[b, idx[b, k]]
            else:
                assert gene_ids[b, k] == GeneVocab.PAD and values[b, k] == 0 and padding[b, k]
        shown = {int(i) for i, v in zip(idx[b], valid[b]) if v}
        assert set(torch.nonzero(revealed[b]).ravel().tolist()) == shown


def test_binomial_downsample_mean_variance_and_total():
    n = 20000
    c = torch.tensor([0.0, 1.0, 5.0, 40.0, 300.0])  # one cell's counts, replicated
    counts = c.expand(n, 5).contiguous()  # (n, 5)
    rate = torch.full((n,), 0.3)
    down = T.binomial_downsample(counts, rate, generator=_gen(0))
    assert (down <= counts).all() and (down == down.round()).all() and (down[:, 0] == 0).all()
    mean, var = down.mean(0).double(), down.var(0).double()
    expect_mean, expect_var = 0.3 * c.double(), c.double() * 0.3 * 0.7
    se = torch.sqrt(expect_var / n).clamp_min(1e-9)
    assert ((mean - expect_mean).abs() <= 5 * se).all()  # 5 standard errors
    torch.testing.assert_close(var[1:], expect_var[1:], rtol=0.05, atol=0)
    tot = down.sum(1).double()
    assert abs(tot.mean() - 0.3 * c.sum()) <= 5 * math.sqrt(c.sum() * 0.21 / n)
    assert torch.equal(T.binomial_downsample(counts[:3], torch.ones(3), generator=_gen(1)), counts[:3])
    assert (T.binomial_downsample(counts[:3], torch.zeros(3), generator=_gen(1)) == 0).all()
    with pytest.raises(TfmkitError, match=r"downsampling rates must be a \(3,\) tensor in \[0, 1\]"):
        T.binomial_downsample(counts[:3], torch.tensor([0.5, 1.5, 0.2]), generator=None)


def test_sample_depths_log_uniform_and_kept():
    n, S, m = 20000, 50000.0, 1000.0
    depth = T.sample_depths(torch.full((n,), S), generator=_gen(2), min_depth=m, keep_prob=0.25)
    kept = depth == S
    assert abs(kept.float().mean().item() - 0.25) < 0.015
    d = depth[~kept].double().numpy()
    assert (d >= m * (1 - 1e-6)).all() and (d <= S).all()
    u = (np.log(d) - np.log(m)) / (np.log(S) - np.log(m))  # uniform on [0, 1] when log-uniform
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    small = T.sample_depths(torch.tensor([300.0, 0.0]), generator=_gen(0), min_depth=m, keep_prob=0.0)
    torch.testing.assert_close(small, torch.tensor([300.0, 0.0]))  # below min_depth / empty: kept
    with pytest.raises(TfmkitError, match="RDA needs min_depth > 0 and keep_prob in"):
        T.sample_depths(torch.ones(2), generator=None, keep_prob=2.0)


def test_rda_downsample_expected_total():
    n, m = 20000, 100.0
    c = torch.tensor([10.0, 200.0, 790.0])  # S = 1000 over the vocabulary ...
    counts = c.expand(n, 3).contiguous()
    lib = torch.full((n,), 2000.0)  # ... plus 1000 counts of genes outside the vocabulary
    down, lib_ds = T.rda_downsample(counts, lib, generator=_gen(5), min_depth=m, keep_prob=0.0)
    # E[depth] of a log-uniform depth on [m, S]: (S - m) / ln(S / m); E[down] = E[depth] / S * counts
    e_rate = (2000.0 - m) / math.log(2000.0 / m) / 2000.0
    np.testing.assert_allclose(down.sum(1).mean().item(), e_rate * 1000.0, rtol=0.02)
    np.testing.assert_allclose(lib_ds.mean().item(), e_rate * 2000.0, rtol=0.02)
    assert (lib_ds >= down.sum(1)).all() and (down <= counts).all()
    same, lib_same = T.rda_downsample(counts[:4], lib[:4], generator=_gen(0), keep_prob=1.0)
    assert torch.equal(same, counts[:4]) and torch.equal(lib_same, lib[:4])  # kept cells unchanged
    a = T.rda_downsample(counts[:50], lib[:50], generator=_gen(7))
    b = T.rda_downsample(counts[:50], lib[:50], generator=_gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # seeded


def test_gene_dropout_rate():
    counts = torch.full((4000, 25), 3.0)
    out = T.gene_dropout(counts, 0.2, generator=_gen(0))
    assert set(out.unique().tolist()) == {0.0, 3.0}
    assert abs((out == 0).float().mean().item() - 0.2) < 0.01
    with pytest.raises(TfmkitError, match=r"gene dropout probability must be in \[0, 1\)"):
        T.gene_dropout(counts, 1.0, generator=None)


def test_hard_bins_edges_and_quantiles_vs_numpy():
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(6, 40)).astype(np.float32)
    edges = np.array([1.0, 2.5, 4.0], dtype=np.float32)
    got = T.hard_bins(torch.from_numpy(x), 5, torch.from_numpy(edges)).numpy()
    np.testing.assert_array_equal(got, np.where(x > 0, np.minimum(1 + np.digitize(x, edges, right=False), 4), 0))
    got = T.hard_bins(torch.from_numpy(x), 5).numpy()
    for r in range(6):
        nz = np.sort(x[r][x[r] > 0])
        ref = np.where(x[r] > 0, 1 + (4 * np.searchsorted(nz, x[r], side="left")) // max(len(nz), 1), 0)
        np.testing.assert_array_equal(got[r], ref)


def test_log2_bins_vs_numpy():
    c = np.array([[0, 0.5, 1, 2, 3, 7, 8, 15, 16, 1e6]], dtype=np.float64)
    ref = np.minimum(np.floor(np.log2(c + 1)), 6).astype(np.int64)
    np.testing.assert_array_equal(T.log2_bins(torch.tensor(c, dtype=torch.float32), 6, "counts").numpy(), ref)
    np.testing.assert_array_equal(T.log2_bins(torch.log1p(torch.tensor(c, dtype=torch.float32)), 6).numpy(), ref)
    with pytest.raises(TfmkitError, match="log_bin input must be 'log1p' or 'counts'"):
        T.log2_bins(torch.zeros(1, 1), 6, "raw")


@pytest.mark.parametrize("ties,method", [("average", "average"), ("ordinal", "ordinal")])
def test_expression_ranks_vs_scipy(ties, method):
    rng = np.random.default_rng(3)
    x = rng.poisson(1.5, size=(7, 30)).astype(np.float32)  # many ties (zeros and small counts)
    obs = rng.random((7, 30)) < 0.8
    got = T.expression_ranks(torch.from_numpy(x), torch.from_numpy(obs), ties=ties).numpy()
    for r in range(7):
        ref = np.zeros(30)
        ref[obs[r]] = stats.rankdata(-x[r][obs[r]], method=method)
        np.testing.assert_array_equal(got[r], ref)
    assert got.dtype == (np.float32 if ties == "average" else np.int64)
    full = T.expression_ranks(torch.from_numpy(x), ties=ties).numpy()
    np.testing.assert_array_equal(full[0], stats.rankdata(-x[0], method=method))


def test_expression_ranks_errors():
    with pytest.raises(TfmkitError, match="rank ties must be 'average' or 'ordinal'"):
        T.expression_ranks(torch.zeros(1, 2), ties="min")
    with pytest.raises(TfmkitError, match="cannot rank non-finite expression values"):
        T.expression_ranks(torch.tensor([[1.0, float("nan")]]))
