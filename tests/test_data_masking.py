"""Revealed-gene sampling against exact inclusion probabilities."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from tfmkit.data.masking import DEFAULT_N_REVEALED, RevealSpec, frequency_weights, sample_revealed
from tfmkit.errors import TfmkitError

N_DRAWS = 40000


def _inclusion(idx, valid, G):
    hits = torch.zeros(idx.shape[0], G, dtype=torch.int32).scatter_add_(1, idx, valid.int())
    return hits


def _successive_inclusion(w, k):
    """Exact inclusion probabilities of successive sampling (brute-force enumeration)."""
    w = np.asarray(w, dtype=np.float64)
    p = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), k):
        prob, left = 1.0, w.sum()
        for i in seq:
            prob *= w[i] / left
            left -= w[i]
        p[list(seq)] += prob
    return p


def test_uniform_inclusion_is_k_over_n_and_respects_observable():
    G, k = 10, 3
    obs = torch.zeros(N_DRAWS, G, dtype=torch.bool)
    obs[:, [0, 2, 3, 5, 7, 9]] = True  # n = 6 observable
    idx, valid = sample_revealed(obs, k, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (N_DRAWS, k) and valid.all()
    hits = _inclusion(idx, valid, G)
    assert hits.max() == 1  # no duplicates within a cell
    assert hits[:, ~obs[0]].sum() == 0  # never a non-observable gene
    freq = hits.float().mean(0)[obs[0]].numpy()
    se = np.sqrt(0.5 * 0.5 / N_DRAWS)
    np.testing.assert_allclose(freq, k / 6, atol=5 * se)


def test_weighted_k1_matches_w_over_sum_chisquare():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5])
    obs = torch.ones(N_DRAWS, 5, dtype=torch.bool)
    idx, valid = sample_revealed(obs, 1, generator=torch.Generator().manual_seed(1), weights=w)
    counts = np.bincount(idx[:, 0].numpy(), minlength=5)
    wn = w.double().numpy()
    expected = wn / wn.sum() * N_DRAWS
    assert stats.chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("k", [2, 3])
def test_weighted_k_gt_1_matches_successive_sampling(k):
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    obs = torch.ones(N_DRAWS, 5, dtype=torch.bool)
    idx, valid = sample_revealed(obs, k, generator=torch.Generator().manual_seed(k), weights=torch.tensor(w))
    hits = _inclusion(idx, valid, 5)
    assert hits.max() == 1
    freq = hits.float().mean(0).numpy()
    exact = _successive_inclusion(w, k)
    np.testing.assert_allclose(freq, exact, atol=5 * np.sqrt(0.25 / N_DRAWS))
    # the joint law of the revealed set also matches (set probabilities, chi-square)
    sets = {s: 0 for s in itertools.combinations(range(5), k)}
    for row in np.sort(idx.numpy(), axis=1):
        sets[tuple(row)] += 1
    exp_sets = []
    for s in sets:
        p = 0.0
        for seq in itertools.permutations(s):
            prob, left = 1.0, w.sum()
            for i in seq:
                prob *= w[i] / left
                left -= w[i]
            p += prob
        exp_sets.append(p * N_DRAWS)
    assert stats.chisquare(list(sets.values()), exp_sets).pvalue > 1e-3


def test_padding_when_fewer_candidates_and_expressed_restriction():
    obs = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    expressed = torch.tensor([[1, 0, 1, 0, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    idx, valid = sample_revealed(obs, 10, generator=torch.Generator().manual_seed(0), expressed=expressed)
    assert idx.shape == (3, 5)  # K capped at the largest number of candidates
    assert valid.sum(1).tolist() == [2, 1, 5]
    assert sorted(idx[0][valid[0]].tolist()) == [0, 2]  # observable AND expressed
    assert idx[1][valid[1]].tolist() == [0]
    assert (idx[~valid] == 0).all()


def test_zero_weight_never_sampled_and_bad_args():
    obs = torch.ones(2000, 4, dtype=torch.bool)
    idx, valid = sample_revealed(obs, 3, generator=torch.Generator().manual_seed(0),
                                 weights=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert not (idx[valid] == 1).any()
    with pytest.raises(TfmkitError, match="n_revealed must be >= 1"):
        sample_revealed(obs, 0, generator=None)
    with pytest.raises(TfmkitError, match=r"gene weights have shape \(3,\), expected \(4,\)"):
        sample_revealed(obs, 2, generator=None, weights=torch.ones(3))


def test_determinism_with_generator():
    obs = torch.rand(8, 50) > 0.3
    a = sample_revealed(obs, 7, generator=torch.Generator().manual_seed(5))
    b = sample_revealed(obs, 7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_frequency_weights():
    m = np.array([0, 1, 4, 16])
    np.testing.assert_allclose(frequency_weights(m, 0.0).numpy(), 0.25)
    w = frequency_weights(m, 0.5).numpy()  # sqrt(m) with m=0 treated as m=1: 1,1,2,4
    np.testing.assert_allclose(w, np.array([1, 1, 2, 4]) / 8, rtol=1e-6)
    w = frequency_weights(m, -1.0).numpy()  # 1/m: 1, 1/4, 1/16; m=0 gets the smallest (1/16)
    np.testing.assert_allclose(w, np.array([1 / 16, 1, 1 / 4, 1 / 16]) / (1 + 1 / 4 + 2 / 16), rtol=1e-6)
    assert abs(w.sum() - 1) < 1e-6
    with pytest.raises(TfmkitError, match="non-negative counts"):
        frequency_weights(np.array([-1, 2]), 1.0)


def test_reveal_spec_defaults_validation_and_weights():
    assert RevealSpec() == RevealSpec(DEFAULT_N_REVEALED, 0.0, False) and DEFAULT_N_REVEALED == 256
    assert RevealSpec(7.0).n_revealed == 7 and isinstance(RevealSpec(7.0).n_revealed, int)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(TfmkitError, match="n_revealed must be an integer >= 1"):
            RevealSpec(bad)
    with pytest.raises(TfmkitError, match="tau must be a finite number"):
        RevealSpec(8, tau=float("nan"))

    class Store:  # only what gene_weights reads
        def nonzero_cells(self):
            return np.array([0, 1, 4, 16])

    assert RevealSpec(tau=0.0).gene_weights(Store()) is None  # uniform: no weights
    w = RevealSpec(tau=0.5).gene_weights(Store())
    np.testing.assert_allclose(w.numpy(), np.array([1, 1, 2, 4]) / 8, rtol=1e-6)


def _composition_reference(n_expr, n_zero, K, f):
    """Expected (expressed, zero) revealed counts of RevealSpec.zero_fraction, written out."""
    ke = math.ceil((1 - f) * K)
    ne = min(n_expr, ke)
    nz = min(n_zero, int(np.round(ne * f / (1 - f))))
    return ne, nz


@pytest.mark.parametrize("f", [0.1, 0.25, 0.5])
def test_zero_fraction_composition_and_uniform_within_groups(f):
    G, K, B = 30, 12, 4000
    rng = np.random.default_rng(0)
    obs = torch.ones(B, G, dtype=torch.bool)
    obs[:, 25:] = False  # 5 unobservable genes
    expressed = torch.zeros(B, G, dtype=torch.bool)
    n_expr = np.array([3, 10, 20, 0])[np.arange(B) % 4]  # few, some, many (> K) and none expressed
    for i, n in enumerate(n_expr):
        expressed[i, rng.choice(25, n, replace=False)] = True
    idx, valid = sample_revealed(obs, K, generator=torch.Generator().manual_seed(0),
                                 expressed=expressed, zero_fraction=f)
    hits = _inclusion(idx, valid, G)
    assert hits.max() == 1 and hits[:, 25:].sum() == 0  # distinct, observable only
    for i in range(8):
        ne, nz = _composition_reference(int(n_expr[i]), 25 - int(n_expr[i]), K, f)
        assert int((hits[i].bool() & expressed[i]).sum()) == ne
        assert int((hits[i].bool() & ~expressed[i]).sum()) == nz
    # among the 20-expressed cells, each expressed gene is revealed with prob ne / 20
    rows = np.flatnonzero(n_expr == 20)
    ne, nz = _composition_reference(20, 5, K, f)
    p_e = (hits[rows] & expressed[rows]).sum(0).float() / expressed[rows].sum(0).clamp_min(1).float()
    zero = (~expressed[rows]) & obs[rows]
    p_z = (hits[rows].bool() & zero).sum(0).float() / zero.sum(0).clamp_min(1).float()
    np.testing.assert_allclose(p_e[:25].numpy(), ne / 20, atol=0.08)
    np.testing.assert_allclose(p_z[:25].numpy(), nz / 5, atol=0.08)


def test_per_cell_generators_make_rows_independent_of_the_batch():
    G, K = 40, 6
    obs = torch.ones(3, G, dtype=torch.bool)
    expressed = torch.rand(3, G, generator=torch.Generator().manual_seed(1)) < 0.4
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    idx, valid = sample_revealed(obs, K, generator=gens([5, 6, 7]), expressed=expressed, zero_fraction=0.2)
    for i, s in enumerate([5, 6, 7]):
        one, v1 = sample_revealed(obs[i:i + 1], K, generator=gens([s]), expressed=expressed[i:i + 1],
                                  zero_fraction=0.2)
        assert set(one[v1].tolist()) == set(idx[i][valid[i]].tolist())
    with pytest.raises(TfmkitError, match="2 per-cell generators for 3 cells"):
        sample_revealed(obs, K, generator=gens([1, 2]))


def test_zero_fraction_validation():
    assert RevealSpec().zero_fraction == 0.0
    assert RevealSpec(expressed_only=True, zero_fraction=0.1).zero_fraction == 0.1
    with pytest.raises(TfmkitError, match=r"zero_fraction must be a number in \[0, 1\)"):
        RevealSpec(expressed_only=True, zero_fraction=1.0)
    with pytest.raises(TfmkitError, match="set expressed_only=true"):
        RevealSpec(zero_fraction=0.1)
    with pytest.raises(TfmkitError, match="needs the expressed genes"):
        sample_revealed(torch.ones(2, 5, dtype=torch.bool), 2, generator=None, zero_fraction=0.1)
