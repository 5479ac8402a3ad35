"""Objectives and activations against closed forms and torch.distributions references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tfmkit import objectives as O

D = torch.float64


def _data(seed=0, b=4, g=30):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, g, generator=gen, dtype=D) * 2
    counts = torch.distributions.Poisson(torch.exp(logits.clamp(max=3))).sample().to(D)
    mask = torch.rand(b, g, generator=gen) > 0.3
    return logits, counts, mask


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", O.ACTIVATIONS.names())
def test_activations_shape_and_grad(name):
    z = torch.linspace(-30, 30, 61, dtype=D).reshape(1, -1).requires_grad_(True)
    y = O.ACTIVATIONS.get(name)(z, library_size=1e4)
    assert y.shape == z.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_activation_closed_forms():
    z = torch.linspace(-30, 30, 61, dtype=D)
    L = 1e4
    assert torch.allclose(
        O.rectified_tanh(z, L), math.log(L + 1) * torch.clamp(torch.tanh(z / (4 * math.e)), min=0)
    )
    assert O.rectified_tanh(z, L).max() < math.log(L + 1)
    assert torch.equal(O.relu(z), torch.where(z > 0, z, torch.zeros_like(z)))
    cr = O.clamped_relu(z, L)
    assert float(cr.max()) == pytest.approx(math.log(L + 1)) and float(cr.min()) == 0.0
    assert torch.equal(O.identity(z), z)
    s = O.softmax(z[None], L)
    assert float(torch.expm1(s).sum()) == pytest.approx(L)  # proportions times L, in log1p space


# --------------------------------------------------------------------------- log1p-space losses
def test_poisson_mse_smoothl1_closed_forms():
    gen = torch.Generator().manual_seed(0)
    pred, target = (
        torch.rand(3, 20, generator=gen, dtype=D) * 5,
        torch.rand(3, 20, generator=gen, dtype=D) * 5,
    )
    mask = torch.rand(3, 20, generator=gen) > 0.5
    for r in range(3):
        p, t = pred[r, mask[r]], target[r, mask[r]]
        assert float(O.poisson_nll(pred, target, mask)[r]) == pytest.approx(
            float((p.exp() - p * t.exp()).mean())
        )
        assert float(O.mse(pred, target, mask)[r]) == pytest.approx(float(((p - t) ** 2).mean()))
        d = (p - t).abs()
        huber = torch.where(d < 0.5, 0.5 * d**2 / 0.5, d - 0.25).mean()
        assert float(O.smooth_l1(pred, target, mask, beta=0.5)[r]) == pytest.approx(float(huber))
    # Poisson = torch's poisson_nll_loss with log_input on rate exp(target) (no Stirling term)
    ref = F.poisson_nll_loss(pred, target.exp(), log_input=True, reduction="none").mean(-1)
    torch.testing.assert_close(O.poisson_nll(pred, target), ref)


# --------------------------------------------------------------------------- count losses
def test_geometric_matches_torch_distributions():
    logits, counts, mask = _data(1)
    ref = -torch.distributions.Geometric(logits=-logits).log_prob(counts)  # theta = sigmoid(-phi)
    torch.testing.assert_close(O.geometric_count_nll(logits, counts), ref.sum(-1))
    torch.testing.assert_close(O.geometric_count_nll(logits, counts, mask), (ref * mask).sum(-1))
    # mean of the Geometric is exp(phi) (GPL Suppl. A.1 central identity)
    mean = torch.distributions.Geometric(logits=-logits).mean
    torch.testing.assert_close(mean, logits.exp())


def test_nb_matches_torch_distributions_and_reduces_to_geometric():
    logits, counts, mask = _data(2)
    gen = torch.Generator().manual_seed(9)
    r = torch.rand(logits.shape[1], generator=gen, dtype=D) * 3 + 0.1
    ref = -torch.distributions.NegativeBinomial(total_count=r, logits=logits).log_prob(counts)
    torch.testing.assert_close(O.nb_nll(logits, counts, r, mask), (ref * mask).sum(-1))
    torch.testing.assert_close(O.nb_nll(logits, counts, 1.0), O.geometric_count_nll(logits, counts))
    reg = O.nb_nll(logits, counts, r, mask, dispersion_l2=0.01) - O.nb_nll(logits, counts, r, mask)
    torch.testing.assert_close(reg, torch.full((4,), 0.01 * float(((r - 1) ** 2).mean()), dtype=D))


def test_proportional_ce_closed_form():
    logits, counts, mask = _data(3)
    counts[3] = 0  # a cell without counts contributes 0
    got = O.proportional_ce(logits, counts, mask)
    for c in range(3):
        m = mask[c]
        p = counts[c, m] / counts[c, m].sum()
        ref = -(p * torch.log_softmax(logits[c, m], -1)).sum()
        assert float(got[c]) == pytest.approx(float(ref))
    assert float(got[3]) == 0.0
    # softmax is shift invariant, so the depth shift has no effect (GPL Suppl. A.1)
    shifted = O.depth_shift(logits, torch.full((4,), 5000.0), mask.sum(-1))
    torch.testing.assert_close(O.proportional_ce(shifted, counts, mask), got)
    # and it equals torch's soft-label cross_entropy without a mask
    ref_all = F.cross_entropy(
        logits[:3], counts[:3] / counts[:3].sum(-1, keepdim=True), reduction="none"
    )
    torch.testing.assert_close(O.proportional_ce(logits[:3], counts[:3]), ref_all)


def test_depth_shift_and_z_loss():
    logits, _, mask = _data(4)
    u = torch.tensor([1000.0, 36000.0, 360000.0, 10.0], dtype=D)
    v = mask.sum(-1)
    out = O.depth_shift(logits, u, v, s0=0.5)
    torch.testing.assert_close(out - logits, (0.5 * torch.log(u / v))[:, None].expand_as(logits))
    # exp(phi') = exp(phi) * U / V at s0 = 1
    torch.testing.assert_close(O.depth_shift(logits, u, v).exp(), logits.exp() * (u / v)[:, None])
    z = O.z_loss(logits, mask, alpha=1e-2)
    for c in range(4):
        assert float(z[c]) == pytest.approx(
            1e-2 * float(torch.logsumexp(logits[c, mask[c]], 0)) ** 2
        )
    torch.testing.assert_close(O.z_loss(logits), torch.logsumexp(logits, -1) ** 2)


def test_wced_loss_closed_form():
    gen = torch.Generator().manual_seed(5)
    e_logit = torch.randn(2, 12, generator=gen, dtype=D)
    value = torch.rand(2, 12, generator=gen, dtype=D) * 3
    target = (
        torch.rand(2, 12, generator=gen, dtype=D) * 3 * (torch.rand(2, 12, generator=gen) > 0.5)
    )
    inp = torch.rand(2, 12, generator=gen) > 0.5
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :2] = False
    got = O.wced_loss(e_logit, value, target, mask, inp)

    def part(c, sel):
        bce = F.binary_cross_entropy_with_logits(e_logit[c, sel], (target[c, sel] > 0).to(D))
        nz = sel & (target[c] > 0)
        mse = (
            ((value[c, nz] - target[c, nz]) ** 2).mean() if nz.any() else torch.tensor(0.0, dtype=D)
        )
        return bce + mse

    for c in range(2):
        ref = 0.5 * (part(c, mask[c] & inp[c]) + part(c, mask[c] & ~inp[c]))
        assert float(got[c]) == pytest.approx(float(ref))
    one = O.wced_loss(e_logit, value, target, mask)
    assert float(one[1]) == pytest.approx(float(part(1, mask[1])))


@pytest.mark.parametrize("name", O.OBJECTIVES.names())
def test_every_objective_per_cell_finite_grad(name):
    logits, counts, mask = _data(6)
    x = logits.clone().requires_grad_(True)
    fn = O.OBJECTIVES.get(name)
    if name in ("poisson_nll", "mse", "smooth_l1"):
        loss = fn(O.rectified_tanh(x), torch.log1p(counts), mask)
    elif name == "wced_loss":
        loss = fn(x, x, torch.log1p(counts), mask)
    else:
        loss = fn(x, counts, mask=mask)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[~mask] == 0)  # unobservable genes never enter a loss
