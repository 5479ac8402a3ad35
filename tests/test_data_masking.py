"""Revealed-gene sampling against exact inclusion probabilities."""

import itertools

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
