"""BMFM family and tasks (issue 10 item 3): MLM value/gene losses, WCED, multitask heads with
gradient reversal, RDA downsampling, and the three shipped bmfm configs end to end."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.special import expit, log_softmax

import tfmkit
from tfmkit.config import load_config
from tfmkit.criterion import build_criterion
from tfmkit.data import keys as K
from tfmkit.data import collate_bmfm as CB
from tfmkit.data.corpus import Corpus
from tfmkit.errors import TfmkitError
from tfmkit.models import build_model
from tfmkit.models.grl import GradientReversal
from tfmkit.tasks.mlm import masked_gene_loss, mlm_value_loss
from tfmkit.tasks.multitask import MultitaskTask, focal_loss
from tfmkit.training import pretrain

from conftest import GENES, make_counts

SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "data.n_revealed=12", "data.min_cells=1",
         "data.val_fraction=0.1", "train.batch_size=8", "train.log_every=1", "train.val_every=0"]
CONFIGS = ["bmfm_mlm_tiny", "bmfm_wced_tiny", "bmfm_multitask_tiny"]


def _cfg(name, steps, *extra):
    return load_config(name, SMALL + [f"train.steps={steps}", f"train.checkpoint_every={steps}", *extra])


# ---- MLM losses against a hand computation ---------------------------------------------------
def _mlm_case(seed=0, B=3, T=5, n_bins=4, G=7):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, T, generator=g) * 3
    target[torch.rand(B, T, generator=g) < 0.4] = 0.0
    sel = torch.rand(B, T, generator=g) < 0.6
    sel[2] = False  # a cell with no masked value: loss 0
    out = {"value": torch.randn(B, T, generator=g), "is_zero": torch.randn(B, T, generator=g),
           "value_bins": torch.randn(B, T, n_bins, generator=g), "gene": torch.randn(B, T, G, generator=g)}
    gene_t = torch.randint(0, G, (B, T), generator=g).masked_fill(torch.rand(B, T, generator=g) < 0.5, -1)
    batch = {CB.MLM_VALUE_TARGET: target, CB.MLM_VALUE_LOSS: sel,
             CB.MLM_BIN_TARGET: torch.randint(0, n_bins, (B, T), generator=g), CB.MLM_GENE_TARGET: gene_t}
    return out, batch


def test_mlm_value_losses_match_hand_computation():
    out, batch = _mlm_case()
    x, sel = batch[CB.MLM_VALUE_TARGET].numpy(), batch[CB.MLM_VALUE_LOSS].numpy()
    v, s = out["value"].numpy(), out["is_zero"].numpy()
    lp, bins = log_softmax(out["value_bins"].numpy(), axis=-1), batch[CB.MLM_BIN_TARGET].numpy()
    for b in range(x.shape[0]):
        P = np.flatnonzero(sel[b])
        ce = np.mean([-lp[b, t, bins[b, t]] for t in P]) if len(P) else 0.0
        mse = np.mean([(v[b, t] - x[b, t]) ** 2 for t in P]) if len(P) else 0.0
        p = expit(s[b, P])
        z = (x[b, P] == 0).astype(float)
        bce = np.mean(-(z * np.log(p) + (1 - z) * np.log(1 - p))) if len(P) else 0.0
        nz = [t for t in P if x[b, t] > 0]
        mse_nz = np.mean([(v[b, t] - x[b, t]) ** 2 for t in nz]) if nz else 0.0
        assert mlm_value_loss(out, batch, "bins")[b].item() == pytest.approx(ce, rel=1e-5, abs=1e-6)
        assert mlm_value_loss(out, batch, "mse")[b].item() == pytest.approx(mse, rel=1e-5, abs=1e-6)
        assert mlm_value_loss(out, batch, "zero_mse")[b].item() == pytest.approx(bce + mse_nz, rel=1e-5, abs=1e-6)
    assert mlm_value_loss(out, batch, "zero_mse")[2].item() == 0.0


def test_masked_gene_loss_matches_hand_computation():
    out, batch = _mlm_case(seed=3)
    lp, y = log_softmax(out["gene"].numpy(), axis=-1), batch[CB.MLM_GENE_TARGET].numpy()
    got = masked_gene_loss(out, batch)
    sel = batch[CB.MLM_GENE_TARGET] >= 0
    torch.testing.assert_close(masked_gene_loss({"gene_masked": out["gene"][sel]}, batch), got)  # packed form
    for b in range(y.shape[0]):
        Q = np.flatnonzero(y[b] >= 0)
        ref = np.mean([-lp[b, t, y[b, t]] for t in Q]) if len(Q) else 0.0
        assert got[b].item() == pytest.approx(ref, rel=1e-5)


def test_focal_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    p = np.exp(log_softmax(logits.numpy(), axis=-1))[np.arange(6), y.numpy()]
    np.testing.assert_allclose(focal_loss(logits, y, 2.0).numpy(), -(1 - p) ** 2 * np.log(p), rtol=1e-5)
    np.testing.assert_allclose(focal_loss(logits, y, 0.0).numpy(),
                               torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy(), rtol=1e-5)


# ---- WCED through the model's head -----------------------------------------------------------
def test_wced_from_cls_matches_hand_computation():
    torch.manual_seed(0)
    G = 9
    model = build_model("bmfm/tiny", G, dim=16, depth=1, heads=2).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.stack([torch.randperm(G, generator=g)[:4] for _ in range(3)]) + 4  # (3, 4)
    batch = {K.GENE_IDS: ids, K.VALUES: torch.rand(3, 4, generator=g), K.PADDING: torch.zeros(3, 4, dtype=torch.bool)}
    target = torch.rand(3, G, generator=g) * 2
    target[torch.rand(3, G, generator=g) < 0.4] = 0
    observable = torch.rand(3, G, generator=g) < 0.8
    revealed = torch.zeros(3, G, dtype=torch.bool).scatter_(1, ids - 4, True)
    batch.update({K.TARGET: target, K.OBSERVABLE: observable, K.REVEALED: revealed})
    out = model(batch)
    e, v = out.heads["wced_expressed"], out.heads["wced_value"]
    e2, v2 = model.wced(out.cell)  # the decoder reads the CLS state only
    assert torch.equal(e, e2) and torch.equal(v, v2) and e.shape == (3, G)
    got = build_criterion("wced_loss", n_genes=G, loss_on="all")(out, batch)
    E, V, X = e.detach().numpy(), v.detach().numpy(), target.numpy()
    for b in range(3):
        parts = []
        for S in (observable[b] & revealed[b], observable[b] & ~revealed[b]):
            S = S.numpy()
            if not S.any():
                continue
            p, y = expit(E[b, S]), (X[b, S] > 0)
            bce = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
            nz = S & (X[b] > 0)
            parts.append(bce + (np.mean((V[b, nz] - X[b, nz]) ** 2) if nz.any() else 0.0))
        assert got[b].item() == pytest.approx(np.mean(parts), rel=1e-5)  # input / non-input equal weight


# ---- gradient reversal -----------------------------------------------------------------------
def test_gradient_reversal_flips_only_the_adversarial_gradient_reaching_the_encoder():
    x = torch.randn(4, 3, requires_grad=True)
    (GradientReversal(0.5)(x) * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))

    cfg = _cfg("bmfm_multitask_tiny", 3, "train.objective=none",
               "train.objective_kwargs={}",
               "train.task_kwargs={labels: {ct: {column: cell_type, loss: ce, classes: [type0, type1, type2]}},"
               " adversarial: {bt: {column: batch, lambda: 0.5, classes: [b0, b1]}}}")
    torch.manual_seed(0)
    model = build_model(cfg.model, 20)
    task = MultitaskTask.from_config(cfg, 20)
    g = torch.Generator().manual_seed(0)
    batch = {K.GENE_IDS: torch.randint(4, 24, (6, 5), generator=g), K.VALUES: torch.rand(6, 5, generator=g),
             K.PADDING: torch.zeros(6, 5, dtype=torch.bool),
             CB.label_key("ct"): torch.tensor([0, 1, 2, -1, 1, 0]), CB.label_key("bt"): torch.tensor([0, 1, 1, 0, -1, 0])}
    enc = [p for n, p in model.named_parameters() if n.startswith(("embed.", "encoder."))]

    def grads(fn):
        model.zero_grad(), task.zero_grad()
        fn(model(batch)).backward()
        return tuple([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in ps]
                     for ps in (enc, list(task.heads.parameters()), list(task.adversaries.parameters())))

    def plain_adv(out):  # the same adversary without the reversal layer
        y = batch[CB.label_key("bt")]
        per = torch.nn.functional.cross_entropy(task.adversaries["bt"](out.cell), y.clamp_min(0), reduction="none")
        return (per * (y >= 0)).mean()

    main = grads(lambda o: task.head_losses(o, batch)["ct"].mean())
    adv = grads(lambda o: task.head_losses(o, batch)["bt"].mean())
    plain = grads(plain_adv)
    total = grads(lambda o: task.loss(o, batch).mean())
    for a, p in zip(adv[0], plain[0]):  # encoder: -lambda times the plain gradient
        torch.testing.assert_close(a, -0.5 * p, rtol=1e-4, atol=1e-7)
    for a, p in zip(adv[2], plain[2]):  # the adversary itself still minimises its loss
        torch.testing.assert_close(a, p)
    for t, m, a in zip(total[0], main[0], adv[0]):  # encoder gets main + reversed adversarial
        torch.testing.assert_close(t, m + a, rtol=1e-4, atol=1e-6)
    for t, m in zip(total[1], main[1]):  # the label head's gradient is unchanged
        torch.testing.assert_close(t, m)
    assert all(float(a.abs().sum()) > 0 for a in adv[0][-2:]) and all(float(m.abs().sum()) == 0 for m in main[2])


# ---- data: MLM collator and RDA ---------------------------------------------------------------
@pytest.fixture
def store():
    return Corpus.from_adatas({"a": make_counts(40, GENES[:30], seed=5)}, min_cells=1)


def test_rda_input_depth_is_the_sampled_depth_in_expectation_and_targets_stay(store):
    cell = int(np.argmax(store.library_sizes))
    S = float(store.library_sizes[cell])
    col = CB.MLMCollator(30, 1e4, mask_rate=0.0, rda={"min_depth": S / 10, "keep_prob": 0.0})
    n = 4000
    batch = col(store, np.full(n, cell), torch.Generator().manual_seed(0))
    depth_in = batch[CB.DEPTH][:, 0].double().numpy()
    expected = (S - S / 10) / np.log(10)  # E of a depth log-uniform on [S/10, S]
    se = depth_in.std() / np.sqrt(n)
    assert abs(depth_in.mean() - expected) < 4 * se and (depth_in <= S + 1e-3).all()
    assert torch.all(batch[CB.DEPTH][:, 1] == S)
    counts = torch.from_numpy(store.dense_counts([cell]))[0]
    ref = torch.log1p(counts * 1e4 / S)
    ids = batch[K.GENE_IDS] - 4
    torch.testing.assert_close(batch[CB.MLM_VALUE_TARGET], ref[ids])  # original depth, every draw
    assert (batch[K.VALUES] < batch[CB.MLM_VALUE_TARGET] - 1e-3).any()  # the input was thinned


def test_mlm_collator_masks_expressed_genes_first(store):
    col = CB.MLMCollator(8, 1e4, mask_rate=0.5, keep_rate=0.2, gene_mask_rate=0.3, n_bins=6)
    b = col(store, np.arange(40), torch.Generator().manual_seed(1))
    assert set(b) == set(col.fields)
    counts = torch.from_numpy(store.dense_counts(np.arange(40)))
    n_expr = (counts > 0).sum(1)
    tgt = b[CB.MLM_VALUE_TARGET]
    assert torch.all((tgt > 0).sum(1) == n_expr.clamp(max=8))  # expressed genes fill the slots first
    assert not (b[CB.VALUE_MASKED] & ~b[CB.MLM_VALUE_LOSS]).any()
    assert torch.all(b[K.VALUES][b[CB.VALUE_MASKED]] == 0)
    gm = b[CB.MLM_GENE_TARGET] >= 0
    assert torch.all(b[K.GENE_IDS][gm] == 2) and 0.15 < gm.float().mean() < 0.45
    assert 0.35 < b[CB.MLM_VALUE_LOSS].float().mean() < 0.65
    assert torch.equal(b[CB.MLM_BIN_TARGET], torch.floor(tgt / np.log(2) + 1e-6).long().clamp(0, 5))


# ---- config errors ---------------------------------------------------------------------------
def test_bmfm_config_errors_are_one_line():
    with pytest.raises(TfmkitError, match="needs model.token_heads to include \\['value_bins'\\]"):
        load_config("bmfm_mlm_tiny", ["train.task_kwargs={value_loss: bins}"])
    with pytest.raises(TfmkitError, match="train.task 'mlm' trains train.objective 'mlm'"):
        load_config("bmfm_mlm_tiny", ["train.objective=poisson_nll"])
    with pytest.raises(TfmkitError, match="family 'txfm' does not produce"):
        load_config("txfm_tiny", ["train.task=mlm", "train.objective=mlm"])


def test_multitask_missing_column_and_too_many_classes(tmp_path, two_panels):
    cfg = _cfg("bmfm_multitask_tiny", 2, "train.task_kwargs={labels: {tissue: {column: tissue}}}")
    with pytest.raises(TfmkitError, match="needs obs column 'tissue', which the training data lacks"):
        pretrain(cfg, tmp_path / "a", adatas=two_panels, progress=False)
    cfg = _cfg("bmfm_multitask_tiny", 2, "train.task_kwargs={labels: {ct: {column: cell_type, n_classes: 2}}}")
    with pytest.raises(TfmkitError, match="has 3 classes but head 'ct' has 2 slots"):
        pretrain(cfg, tmp_path / "b", adatas=two_panels, progress=False)


# ---- the shipped configs end to end ----------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
def test_bmfm_config_trains_resumes_saves_loads_embeds(name, tmp_path, two_panels):
    cfg = _cfg(name, 30, "train.lr=0.003")
    pretrain(cfg, tmp_path / "long", adatas=two_panels, progress=False)
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "long" / "train_log.csv"))]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])

    cfg = _cfg(name, 6, "model.drop_path=0.2")
    full = pretrain(cfg, tmp_path / "full", adatas=two_panels, progress=False)
    pretrain(cfg, tmp_path / "part", adatas=two_panels, stop_after=3, progress=False)
    resumed = pretrain(cfg, tmp_path / "part", adatas=two_panels, resume=True, progress=False)
    for f in ("model.safetensors", "criterion.safetensors"):
        if (full / f).exists() or (resumed / f).exists():
            a, b = load_file(str(full / f)), load_file(str(resumed / f))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f

    bundle = tfmkit.load_model(resumed)
    unseen = make_counts(20, GENES[5:35], seed=9)
    tfmkit.embed(unseen, bundle, key="X_b")
    assert unseen.obsm["X_b"].shape == (20, 32) and np.isfinite(unseen.obsm["X_b"]).all()
    assert unseen.obsm["X_b"].std(0).max() > 0
    for kind, table in bundle.module.gene_tables().items():
        assert tfmkit.gene_embeddings(bundle, kind=kind).shape == (bundle.vocab.n_genes, table.shape[1])
    if name == "bmfm_multitask_tiny":  # class lists fixed from the data, saved with the heads
        task = MultitaskTask.from_config(cfg, bundle.vocab.n_genes)
        assert task.classes("cell_type") == []
        task.load_state_dict(load_file(str(resumed / "criterion.safetensors")))
        assert task.classes("cell_type") == ["type0", "type1", "type2"] and task.classes("donor") == ["b0", "b1"]
        assert bundle.run_config.train.task_kwargs == cfg.train.task_kwargs  # config not rewritten
