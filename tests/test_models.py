"""TxFM model: shapes, paper parameter counts, padding invariance, activation numerics."""

import math

import pytest
import torch

from tfmkit.data import keys as K
from tfmkit.models import PAPER_PARAMS, PRESETS, build_model
from tfmkit.objectives import ACTIVATIONS, poisson_nll, rectified_tanh

PAPER_VOCAB = 44_349  # DiverseRNA-1.4M vocabulary (TxFM Table 1)


@pytest.mark.parametrize("preset", ["S", "B", "L"])
def test_paper_parameter_counts(preset):
    with torch.device("meta"):  # no memory is allocated
        n = build_model(preset, PAPER_VOCAB).num_parameters()
    ratio = n / PAPER_PARAMS[preset]
    print(f"TxFM-{preset}: {n / 1e6:.1f}M parameters vs paper {PAPER_PARAMS[preset] / 1e6:.0f}M ({ratio:.3f}x)")
    assert abs(ratio - 1) < 0.10


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_architecture_matches_table6(preset):
    table6 = {"S": (6, 6, 384), "B": (12, 12, 768), "L": (24, 16, 1024)}
    with torch.device("meta"):
        m = build_model(preset, 100)
    if preset in table6:
        assert (m.config.depth, m.config.heads, m.config.dim) == table6[preset]
    assert len(m.encoder.blocks) == m.config.depth


def _inputs(B=3, Kr=7, G=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(G, generator=g)[:Kr] for _ in range(B)]) + 4
    return ids, torch.rand(B, Kr, generator=g) * 4


def _batch(ids, vals, padding=None):
    b = {K.GENE_IDS: ids, K.VALUES: vals}
    if padding is not None:
        b[K.PADDING] = padding
    return b


def test_forward_shapes_and_range():
    m = build_model("tiny", 50).eval()
    ids, vals = _inputs()
    out = m(_batch(ids, vals))
    assert out.cell.shape == (3, 128) and out.gene_logits.shape == (3, 50)
    assert out.token_states.shape == (3, 7, 128)
    assert out.gene_pred.min() >= 0 and out.gene_pred.max() < math.log(1e5 + 1)
    bounded = build_model("tiny", 50, library_size=10.0).eval()  # the data's L bounds the output
    assert bounded(_batch(ids, vals)).gene_pred.max() <= math.log(11.0) + 1e-6


def test_padding_is_ignored_and_order_invariant():
    m = build_model("tiny", 50).eval()
    ids, vals = _inputs(B=1, Kr=6)
    base = m(_batch(ids, vals)).cell
    perm = torch.randperm(6)
    assert torch.allclose(m(_batch(ids[:, perm], vals[:, perm])).cell, base, atol=1e-5)  # a set
    pad_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    pad_vals = torch.cat([vals, torch.full((1, 4), 9.0)], 1)
    padding = torch.zeros(1, 10, dtype=torch.bool)
    padding[:, 6:] = True
    assert torch.allclose(m(_batch(pad_ids, pad_vals, padding)).cell, base, atol=1e-5)
    mean = m.cell_embedding(_batch(pad_ids, pad_vals, padding), pooling="mean")
    assert torch.allclose(mean, m.cell_embedding(_batch(ids, vals), pooling="mean"), atol=1e-5)


def test_concat_token_is_gene_embedding_then_value():
    m = build_model("tiny", 20)
    ids, vals = _inputs(B=2, Kr=3, G=20)
    tok = m.embed(ids, vals)
    assert tok.shape == (2, 3, 128)
    assert torch.equal(tok[..., -1], vals)  # token_i = [E_i ; x_i]
    assert torch.equal(tok[..., :-1], m.embed.gene.embedding.weight[ids])


@pytest.mark.parametrize("layers", [0, 1, 4, 8])
def test_decoder_depths(layers):
    m = build_model("tiny", 30, decoder_layers=layers)
    ids, vals = _inputs(G=30)
    assert m(_batch(ids, vals)).gene_logits.shape == (3, 30)
    assert len(m.decoder.layers) == layers


def test_rectified_tanh_matches_equation_1():
    z = torch.linspace(-30, 30, 101, dtype=torch.float64)
    L = 1e5
    expected = torch.tensor([math.log(L + 1) * max(math.tanh(v / (4 * math.e)), 0.0) for v in z.tolist()],
                            dtype=torch.float64)
    assert torch.allclose(rectified_tanh(z, L), expected, atol=1e-12)
    # eq. (11): derivative alpha/beta sech^2(z/beta) for z > 0, zero for z <= 0
    zz = torch.tensor([-1.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    rectified_tanh(zz, L).sum().backward()
    a, b = math.log(L + 1), 4 * math.e
    want = [0.0] + [a / b / math.cosh(v / b) ** 2 for v in (0.5, 3.0)]
    assert torch.allclose(zz.grad, torch.tensor(want, dtype=torch.float64), atol=1e-12)


def test_poisson_nll_matches_equation_2_and_masks():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(4, 9, generator=g, dtype=torch.float64) * 3, torch.rand(4, 9, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(4, 9, generator=g) > 0.3
    got = poisson_nll(pred, target, mask)
    for b in range(4):
        idx = mask[b].nonzero().ravel().tolist()
        ref = sum(math.exp(pred[b, i]) - pred[b, i] * math.exp(target[b, i]) for i in idx) / len(idx)
        assert abs(got[b].item() - ref) < 1e-10
    # Poisson NLL up to log(k!) with rate lambda = exp(pred) and count k = exp(target)
    lam, k = torch.exp(pred), torch.exp(target)
    ref = -(k * torch.log(lam) - lam)
    assert torch.allclose(poisson_nll(pred, target), ref.mean(-1))
    # minimised at pred == target (gradient zero)
    p = target.clone().requires_grad_(True)
    poisson_nll(p, target).sum().backward()
    assert torch.allclose(p.grad, torch.zeros_like(p.grad), atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation_builds_a_model(name):
    m = build_model("tiny", 25, activation=name)
    ids, vals = _inputs(G=25)
    out = m(_batch(ids, vals))
    assert torch.isfinite(out.gene_pred).all() and out.gene_pred.shape == (3, 25)


def test_gene_norm_token_is_unit_rms_gene_then_value():
    """``gene_norm``: token = [sqrt(d-1) E_i / ||E_i|| ; x_i]; PAD tokens stay 0; the default
    keeps TxFM's raw [E_i ; x_i] (pinned by tests/test_txfm_regression.py)."""
    m = build_model("tiny", 20, gene_norm=True)
    ids, vals = _inputs(B=2, Kr=3, G=20)
    ids[1, 2] = 0  # PAD
    tok = m.embed(ids, vals)  # (2, 3, 128)
    E = m.embed.gene.embedding.weight[ids]  # (2, 3, 127)
    ref = E / E.norm(dim=-1, keepdim=True) * math.sqrt(127)
    torch.testing.assert_close(tok[0, :, :-1], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tok[1, :2, :-1], ref[1, :2], rtol=1e-5, atol=1e-6)
    assert torch.equal(tok[1, 2, :-1], torch.zeros(127))
    assert torch.equal(tok[..., -1], vals)
    assert build_model("tiny", 20).config.gene_norm is False
