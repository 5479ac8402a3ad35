"""Criterion: model outputs + batch -> per-cell loss, against the pure objectives."""

from __future__ import annotations

import math

import pytest
import torch

from tfmkit.criterion import CRITERIA, build_criterion
from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.models import ModelOutput, build_model
from tfmkit.objectives import (
    OBJECTIVES,
    depth_shift,
    geometric_count_nll,
    gpl_nll,
    nb_nll,
    poisson_nll,
    rectified_tanh,
    wced_loss,
    z_loss,
)

B, G = 4, 25


def _fake(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, G, generator=gen, requires_grad=True)
    out = ModelOutput(
        gene_logits=logits,
        gene_pred=rectified_tanh(logits),
        cell=torch.randn(B, 8, generator=gen),
        heads={"wced_expressed": torch.randn(B, G, generator=gen, requires_grad=True),
               "wced_value": torch.randn(B, G, generator=gen, requires_grad=True)},
    )
    counts = torch.distributions.Poisson(torch.full((B, G), 2.0)).sample()
    observable = torch.rand(B, G, generator=gen) > 0.2
    counts = counts * observable
    revealed = observable & (torch.rand(B, G, generator=gen) > 0.6)
    lib = counts.sum(-1)
    batch = {
        K.COUNTS: counts,
        K.TARGET: torch.log1p(counts / lib.clamp_min(1)[:, None] * 1e4),
        K.OBSERVABLE: observable,
        K.REVEALED: revealed,
        K.LIBRARY_SIZE: lib,
    }
    return out, batch


def test_every_objective_has_a_criterion():
    assert set(CRITERIA.names()) == set(OBJECTIVES.names())


#: Objectives whose outputs a registered model family produces (``wced_loss`` needs a WCED
#: head: it is checked against the hand computation below and refused for TxFM at config load).
TRAINABLE = [n for n in CRITERIA.names() if set(CRITERIA.get(n).output_keys) <= set(
    build_model("tiny", 2).outputs)]


def test_objective_without_a_producing_family_is_refused_at_load():
    from tfmkit.config import load_config

    with pytest.raises(TfmkitError, match="train.objective 'wced_loss' needs model output.*"
                                          "family 'txfm' does not produce"):
        load_config("txfm_tiny", ["train.objective=wced_loss"])
    with pytest.raises(TfmkitError, match="family 'bmfm' does not produce with this config"):
        load_config("bmfm_wced_tiny", ["model.wced_head=false"])  # the head is switched off


@pytest.mark.parametrize("loss_on", ["all", "masked"])
@pytest.mark.parametrize("name", TRAINABLE)
def test_every_criterion_per_cell_loss_and_gradients(name, loss_on):
    out, batch = _fake()
    crit = build_criterion(name, n_genes=G, loss_on=loss_on)
    loss = crit(out, batch)
    assert loss.shape == (B,) and torch.isfinite(loss).all()
    loss.mean().backward()
    leaf = out.gene_logits
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    unused = ~batch[K.OBSERVABLE]
    if loss_on == "masked":
        unused = unused | batch[K.REVEALED]
    assert torch.all(leaf.grad[unused] == 0)  # genes outside the loss mask get no gradient


def test_masks_select_the_right_genes():
    out, batch = _fake(1)
    obs, rev = batch[K.OBSERVABLE], batch[K.REVEALED]
    got = build_criterion("poisson_nll", n_genes=G)(out, batch)
    torch.testing.assert_close(got, poisson_nll(out.gene_pred, batch[K.TARGET], obs))
    got = build_criterion("poisson_nll", n_genes=G, loss_on="masked")(out, batch)
    torch.testing.assert_close(got, poisson_nll(out.gene_pred, batch[K.TARGET], obs & ~rev))
    got = build_criterion("gpl_nll", n_genes=G, loss_on="masked")(out, batch)
    torch.testing.assert_close(got, gpl_nll(out.gene_logits, batch[K.COUNTS], obs & ~rev))
    got = build_criterion("wced_loss", n_genes=G)(out, batch)
    ref = wced_loss(out.heads["wced_expressed"], out.heads["wced_value"], batch[K.TARGET], obs, rev)
    torch.testing.assert_close(got, ref)
    # no OBSERVABLE in the batch -> every gene is observable
    del batch[K.OBSERVABLE]
    got = build_criterion("geometric_count_nll", n_genes=G)(out, batch)
    torch.testing.assert_close(got, geometric_count_nll(out.gene_logits, batch[K.COUNTS]))


def test_depth_shift_is_learned_and_matches_formula():
    out, batch = _fake(2)
    obs = batch[K.OBSERVABLE]
    crit = build_criterion("gpl_nll", n_genes=G, depth_shift=True)
    assert [n for n, _ in crit.named_parameters()] == ["s0"]
    with torch.no_grad():
        crit.s0.fill_(0.7)
    loss = crit(out, batch)
    shifted = out.gene_logits + 0.7 * torch.log(batch[K.LIBRARY_SIZE] / obs.sum(-1))[:, None]
    torch.testing.assert_close(loss, gpl_nll(shifted, batch[K.COUNTS], obs))
    loss.sum().backward()
    assert crit.s0.grad is not None and torch.isfinite(crit.s0.grad)
    # without LIBRARY_SIZE, U is the sum of observable counts
    del batch[K.LIBRARY_SIZE]
    torch.testing.assert_close(crit(out, batch), loss.detach())


def test_nb_dispersion_learned_reduces_to_geometric_and_l2():
    out, batch = _fake(3)
    obs = batch[K.OBSERVABLE]
    crit = build_criterion("nb_nll", n_genes=G, dispersion_l2=0.01)
    assert crit.log_dispersion.shape == (G,)
    loss = crit(out, batch)  # r = 1 at init: Geometric, and zero penalty
    torch.testing.assert_close(loss, geometric_count_nll(out.gene_logits, batch[K.COUNTS], obs))
    loss.sum().backward()
    assert (
        torch.isfinite(crit.log_dispersion.grad).all() and crit.log_dispersion.grad.abs().sum() > 0
    )
    with torch.no_grad():
        crit.log_dispersion.fill_(math.log(2.0))
    ref = nb_nll(out.gene_logits, batch[K.COUNTS], torch.full((G,), 2.0), obs) + 0.01
    torch.testing.assert_close(crit(out, batch), ref)


def test_z_loss_added():
    out, batch = _fake(4)
    plain = build_criterion("proportional_ce", n_genes=G)(out, batch)
    with_z = build_criterion("proportional_ce", n_genes=G, z_loss_weight=1e-3)(out, batch)
    torch.testing.assert_close(with_z - plain, z_loss(out.gene_logits, batch[K.OBSERVABLE], 1e-3))
    shifted = build_criterion("nb_nll", n_genes=G, depth_shift=True)
    # PROP is shift invariant; NB with depth shift differs from NB without
    assert not torch.allclose(shifted(out, batch), build_criterion("nb_nll", n_genes=G)(out, batch))
    _ = depth_shift  # formula covered in test_objectives


def test_kwargs_forwarded():
    out, batch = _fake(5)
    a = build_criterion("smooth_l1", n_genes=G, beta=0.1)(out, batch)
    b = build_criterion("smooth_l1", n_genes=G, beta=5.0)(out, batch)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="nope"), "unknown objective"),
        (dict(name="poisson_nll", loss_on="revealed"), "loss_on"),
        (dict(name="poisson_nll", depth_shift=True), "depth_shift"),
        (dict(name="gpl_nll", beta=1.0), "unknown option"),
        (dict(name="mse", z_loss_weight=-1.0), "z_loss_weight"),
    ],
)
def test_bad_configuration_errors(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(TfmkitError, match=match):
        build_criterion(name, n_genes=G, **kwargs)


def test_bad_inputs_errors():
    out, batch = _fake(6)
    with pytest.raises(TfmkitError, match="wced_expressed"):
        build_criterion("wced_loss", n_genes=G)(
            ModelOutput(gene_logits=out.gene_logits, gene_pred=out.gene_pred), batch
        )
    no_counts = {k: v for k, v in batch.items() if k != K.COUNTS}
    with pytest.raises(TfmkitError, match="counts"):
        build_criterion("gpl_nll", n_genes=G)(out, no_counts)
    with pytest.raises(TfmkitError, match="n_genes"):
        build_criterion("poisson_nll", n_genes=G + 1)(out, batch)
    no_rev = {k: v for k, v in batch.items() if k != K.REVEALED}
    with pytest.raises(TfmkitError, match="revealed"):
        build_criterion("mse", n_genes=G, loss_on="masked")(out, no_rev)


@pytest.fixture
def one_thread():
    """Tiny models run faster (and steadier on a loaded 2-core box) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["gpl_nll", "nb_nll", "poisson_nll"])
def test_trains_a_tiny_txfm(name, one_thread):
    """A TxFM (CLS decoder) trained a few steps with GPL / NB / Poisson lowers its loss."""
    torch.manual_seed(0)
    n_genes, k = 30, 8
    model = build_model("tiny", n_genes, dim=32, depth=1, heads=2, decoder_layers=1)
    crit = build_criterion(name, n_genes=n_genes, depth_shift=name != "poisson_nll")
    opt = torch.optim.Adam(list(model.parameters()) + list(crit.parameters()), lr=3e-3)
    rates = torch.exp(torch.linspace(-2, 3, n_genes))
    counts = torch.distributions.Poisson(rates.expand(16, n_genes)).sample()
    lib = counts.sum(-1)
    target = torch.log1p(counts / lib[:, None] * 1e5)
    gene_ids = torch.stack([torch.randperm(n_genes)[:k] for _ in range(16)])  # (16, k)
    values = target.gather(1, gene_ids)
    revealed = torch.zeros(16, n_genes, dtype=torch.bool).scatter_(1, gene_ids, True)
    batch = {
        K.COUNTS: counts,
        K.TARGET: target,
        K.OBSERVABLE: torch.ones_like(revealed),
        K.REVEALED: revealed,
        K.LIBRARY_SIZE: lib,
    }
    losses = []
    for _ in range(25):
        out = model({K.GENE_IDS: gene_ids + 4, K.VALUES: values})
        loss = crit(out, batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
