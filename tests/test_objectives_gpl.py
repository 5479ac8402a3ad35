"""gpl_nll against independent references: block-by-block brute force, the Geometric race
computed by dynamic programming over stopping times, a Monte-Carlo race, and the exact
normalisation over all ordered partitions (SPEC §4)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tfmkit.objectives import OBJECTIVES, gpl_nll

D = torch.float64


def _blocks(counts: list[float]) -> list[list[int]]:
    """Indices grouped by count, ascending."""
    levels = sorted(set(counts))
    return [[i for i, c in enumerate(counts) if c == lv] for lv in levels]


def brute_log_p(phi: list[float], counts: list[float]) -> float:
    """SPEC §4 formula evaluated block by block with Python loops (no telescoping)."""
    blocks = _blocks(counts)
    logsig = lambda x: -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))  # noqa: E731
    total = 0.0
    for j, blk in enumerate(blocks):
        rest = [i for bl in blocks[j + 1 :] for i in bl]
        r_j = blk + rest
        total += sum(logsig(-phi[i]) for i in blk)
        total += sum(logsig(phi[i]) for i in rest)
        total -= math.log(1.0 - math.exp(sum(logsig(phi[i]) for i in r_j)))
    return total


def race_log_p(phi: list[float], counts: list[float], horizon: int = 4000) -> float:
    """The race itself: P(block j all stop at t_j, t_1 < t_2 < ...) with
    P(W_i = t) = theta_i (1 - theta_i)^t, summed over stopping times by dynamic programming."""
    theta = 1.0 / (1.0 + np.exp(np.asarray(phi, dtype=np.float64)))
    t = np.arange(horizon)
    f_prev = None
    for blk in _blocks(counts):
        p = np.prod([theta[i] * (1.0 - theta[i]) ** t for i in blk], axis=0)  # all of blk stop at t
        if f_prev is None:
            f = p
        else:
            before = np.concatenate(
                [[0.0], np.cumsum(f_prev)[:-1]]
            )  # previous block strictly earlier
            f = p * before
        f_prev = f
    return float(np.log(f_prev.sum()))


def _ordered_partitions(items: list[int]):
    """All ordered set partitions of ``items`` (Fubini number many)."""
    if not items:
        yield []
        return
    n = len(items)
    for size in range(1, n + 1):
        for first in itertools.combinations(items, size):
            rest = [i for i in items if i not in first]
            for tail in _ordered_partitions(rest):
                yield [list(first)] + tail


def test_registered():
    assert OBJECTIVES.get("gpl_nll") is gpl_nll


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_and_race(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 7, (1,), generator=g))
    phi = (torch.randn(n, generator=g, dtype=D) * 1.5).tolist()
    counts = torch.randint(0, 3, (n,), generator=g).tolist()  # many ties, zeros included
    got = -float(gpl_nll(torch.tensor([phi], dtype=D), torch.tensor([counts])))
    assert got == pytest.approx(brute_log_p(phi, counts), abs=1e-6)
    assert got == pytest.approx(race_log_p(phi, counts), abs=1e-6)


def test_worked_example_gpl_suppl_a2():
    # GPL Suppl. A.2 toy cell: counts [0,0,0,3,3,7], logits [-2.1,-1.3,-0.8,1.2,1.8,2.8]
    phi = [-2.1, -1.3, -0.8, 1.2, 1.8, 2.8]
    counts = [0, 0, 0, 3, 3, 7]
    got = -float(gpl_nll(torch.tensor([phi], dtype=D), torch.tensor([counts])))
    assert got == pytest.approx(race_log_p(phi, counts), abs=1e-8)
    assert got == pytest.approx(brute_log_p(phi, counts), abs=1e-10)


def test_sums_to_one_over_all_ordered_partitions():
    phi = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=D)
    parts = list(_ordered_partitions([0, 1, 2, 3]))
    assert len(parts) == 75  # Fubini number a(4)
    counts = torch.zeros(len(parts), 4)
    for r, part in enumerate(parts):
        for level, blk in enumerate(part):
            counts[r, blk] = level  # first block gets count 0
    nll = gpl_nll(phi.expand(len(parts), 4), counts)
    assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-12)
    # only the order of counts matters: shifting every count by +1 (no zero block) is identical
    torch.testing.assert_close(gpl_nll(phi.expand(len(parts), 4), counts + 1), nll)


def _dense_ranks(w: np.ndarray) -> np.ndarray:
    """Row-wise dense rank (ties share a rank, ranks 0..m-1) of an (n, g) integer array."""
    first = np.ones(w.shape, dtype=bool)  # first occurrence of each value in its row
    for j in range(1, w.shape[1]):
        first[:, j] = ~(w[:, :j] == w[:, j : j + 1]).any(1)
    return ((w[:, None, :] < w[:, :, None]) & first[:, None, :]).sum(-1)


def test_monte_carlo_race():
    rng = np.random.default_rng(0)
    phi = np.array([-0.5, 0.2, 0.9, -1.0, 0.4])
    theta = 1.0 / (1.0 + np.exp(phi))
    n = 400_000
    w = rng.geometric(theta, size=(n, 5)) - 1  # stopping round = failures before the first stop
    ranks = _dense_ranks(w)  # the observed ordered partition of every draw
    keys = (ranks * 5 ** np.arange(5)).sum(1)
    uniq, idx, freq = np.unique(keys, return_index=True, return_counts=True)
    top = np.argsort(-freq)[:10]
    pats = torch.tensor(ranks[idx[top]])
    p_model = torch.exp(-gpl_nll(torch.tensor(phi).expand(len(top), 5), pats)).numpy()
    p_emp = freq[top] / n
    se = np.sqrt(p_model * (1 - p_model) / n)
    assert np.all(np.abs(p_emp - p_model) < 5 * se), (p_emp, p_model)
    # and over every observed pattern, the model's probabilities sum to the covered mass
    p_all = torch.exp(
        -gpl_nll(torch.tensor(phi).expand(len(uniq), 5), torch.tensor(ranks[idx]))
    ).sum()
    assert float(p_all) == pytest.approx(1.0, abs=5e-3)


def test_tie_block_permutation_invariance():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(2, 12, generator=g, dtype=D)
    counts = torch.tensor([[0, 0, 0, 0, 2, 2, 2, 5, 5, 9, 1, 1]] * 2)
    base = gpl_nll(phi, counts)
    perm = phi.clone()
    perm[:, [0, 1, 2, 3]] = phi[:, [3, 0, 1, 2]]  # within zero block
    perm[:, [4, 5, 6]] = phi[:, [6, 4, 5]]  # within count-2 block
    perm[:, [7, 8]] = phi[:, [8, 7]]
    torch.testing.assert_close(gpl_nll(perm, counts), base)
    # relabelling genes (columns of both tensors) changes nothing either
    cols = torch.randperm(12, generator=g)
    torch.testing.assert_close(gpl_nll(phi[:, cols], counts[:, cols]), base)
    # but moving a logit across blocks does change the likelihood
    swap = phi.clone()
    swap[:, [0, 9]] = phi[:, [9, 0]]
    assert not torch.allclose(gpl_nll(swap, counts), base)


def test_masked_genes_are_ignored():
    g = torch.Generator().manual_seed(2)
    phi = torch.randn(3, 10, generator=g, dtype=D, requires_grad=True)
    counts = torch.randint(0, 4, (3, 10), generator=g)
    mask = torch.rand(3, 10, generator=g) > 0.4
    mask[2] = False  # a cell with no observable gene -> 0
    loss = gpl_nll(phi, counts, mask)
    for r in range(2):
        keep = mask[r]
        ref = gpl_nll(phi[r : r + 1, keep], counts[r : r + 1, keep])
        torch.testing.assert_close(loss[r : r + 1], ref)
    assert float(loss[2].detach()) == 0.0
    loss.sum().backward()
    assert torch.all(phi.grad[~mask] == 0)
    # arbitrary values (even extreme) at masked positions change nothing
    phi2 = phi.detach().clone()
    phi2[~mask] = 1e4
    counts2 = counts.clone()
    counts2[~mask] = 1000
    torch.testing.assert_close(gpl_nll(phi2, counts2, mask), loss.detach())


def test_batch_equals_single_cells_with_ragged_expression():
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(5, 40, generator=g, dtype=D)
    counts = torch.randint(0, 6, (5, 40), generator=g) * (
        torch.rand(5, 40, generator=g) < torch.linspace(0.05, 1, 5)[:, None]
    )
    batched = gpl_nll(phi, counts)
    single = torch.cat([gpl_nll(phi[r : r + 1], counts[r : r + 1]) for r in range(5)])
    torch.testing.assert_close(batched, single)
    for r in range(5):
        assert float(batched[r]) == pytest.approx(
            -brute_log_p(phi[r].tolist(), counts[r].tolist()), abs=1e-8
        )


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    phi = torch.randn(2, 7, generator=g, dtype=D, requires_grad=True)
    counts = torch.tensor([[0, 0, 1, 1, 3, 2, 0], [5, 0, 5, 1, 0, 0, 2]])
    mask = torch.tensor([[True] * 6 + [False], [True] * 7])
    assert torch.autograd.gradcheck(lambda p: gpl_nll(p, counts, mask), (phi,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_logits_finite(dtype):
    g = torch.Generator().manual_seed(5)
    phi = (
        ((torch.rand(4, 300, generator=g) > 0.5).float() * 100 - 50).to(dtype).requires_grad_(True)
    )
    counts = torch.randint(0, 4, (4, 300), generator=g)
    counts[1] = 0  # all zeros
    counts[2] = torch.arange(300)  # no ties at all
    loss = gpl_nll(phi, counts)
    loss.sum().backward()
    assert loss.dtype == torch.promote_types(dtype, torch.float32)
    assert torch.isfinite(loss).all() and (loss >= -1e-3).all()
    assert torch.isfinite(phi.grad).all()
    # +-50 with a single top gene: still finite and matches float64
    p = torch.tensor([[50.0, -50.0, 50.0, -50.0]], requires_grad=True)
    k = torch.tensor([[3, 0, 1, 0]])
    out = gpl_nll(p, k)
    out.backward()
    assert torch.isfinite(p.grad).all()
    assert float(out.detach()) == pytest.approx(
        float(gpl_nll(p.detach().double(), k)), rel=1e-5, abs=1e-5
    )


def test_float32_matches_float64_at_scale():
    g = torch.Generator().manual_seed(6)
    phi = torch.randn(4, 3000, generator=g, dtype=D) * 2
    counts = torch.distributions.Poisson(torch.exp(phi - 1.5)).sample()
    ref = gpl_nll(phi, counts)
    got = gpl_nll(phi.float(), counts)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-2)
