"""Perturbation-prediction fine-tuning (issue 9 item 3, GPL §4.6): collator, loss and metrics
against independent references; fine-tune -> benchmark on a tiny toy screen; bad input."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

import tfmkit
from tfmkit.data import keys as K
from tfmkit.data.collate_perturbation import PERT_GENE, PERT_TARGET, PERT_VALUE, PerturbationCollator
from tfmkit.data.corpus import Corpus
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError
from tfmkit.evaluation import perturbation_prediction as pp
from tfmkit.finetune.perturbation import finetune_perturbation
from tfmkit.models.protocol import ModelOutput

from conftest import GENES, TINY_TXFM, pretrain_parent

TINY = TINY_TXFM + ["data.n_revealed=16", "train.steps=10", "train.checkpoint_every=10"]
TARGETS = GENES[:4]


def toy_screen(n_per: int = 24, seed: int = 0, contexts=("A", "B")) -> ad.AnnData:
    """Controls and 4 knock-downs in each context over 40 genes: knocking down gene ``i`` scales
    it by 0.1 and gene ``i + 10`` by 4; each context has its own marker block."""
    rng = np.random.default_rng(seed)
    rows, obs = [], []
    for c, ctx in enumerate(contexts):
        base = rng.gamma(2.0, 2.0, 40) + 1.0
        base[20 + 5 * c:25 + 5 * c] *= 6.0
        for p in ["non-targeting"] + TARGETS:
            for _ in range(n_per):
                r = base.copy()
                if p != "non-targeting":
                    r[GENES.index(p)] *= 0.1
                    r[GENES.index(p) + 10] *= 4.0
                rows.append(rng.poisson(r * rng.uniform(2, 4)))
                obs.append((p, ctx))
    o = pd.DataFrame(obs, columns=["perturbation", "context"], index=[f"c{i}" for i in range(len(obs))])
    return ad.AnnData(sp.csr_matrix(np.asarray(rows, np.float32)), obs=o, var=pd.DataFrame(index=GENES))


@pytest.fixture(scope="module")
def screen():
    return toy_screen()


@pytest.fixture(scope="module")
def parent(tmp_path_factory, screen):
    return pretrain_parent(tmp_path_factory.mktemp("pparent") / "run", screen, TINY)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, parent, screen):
    out = tmp_path_factory.mktemp("pft") / "ft"
    return finetune_perturbation(parent, screen, out, split="context", holdout="B", steps=150, lr=3e-3,
                                 batch_size=32, val_every=50, train_controls=True)


class _Base:
    """A parent collator emitting fixed revealed genes (token ids) with values 1.0."""

    fields = (K.GENE_IDS, K.VALUES, K.PADDING)

    def __call__(self, store, idx, gen):
        ids = torch.tensor([[4, 5, 6, 7]] * len(idx))  # genes 0..3
        return {K.GENE_IDS: ids, K.VALUES: torch.ones(ids.shape), K.PADDING: torch.zeros(ids.shape, dtype=torch.bool)}


def test_collator_puts_the_perturbation_token_first_and_hides_the_target(screen):
    store = Corpus.from_adatas({"toy": screen}, vocab=GeneVocab(GENES))
    targets = np.full(store.n_cells, -1)
    targets[:2] = [1, 9]  # cell 0 perturbs gene 1 (revealed: hidden), cell 1 gene 9 (not revealed)
    b = PerturbationCollator(_Base(), targets)(store, [0, 1, 2], None)
    ids, vals, pad = b[K.GENE_IDS], b[K.VALUES], b[K.PADDING]
    assert ids.shape == (3, 5)
    assert ids[:, 0].tolist() == [GeneVocab.N_SPECIAL + 1, GeneVocab.N_SPECIAL + 9, GeneVocab.PAD]
    assert vals[:, 0].tolist() == [PERT_VALUE] * 3 and pad[:, 0].tolist() == [False, False, True]
    assert ids[0, 1:].tolist() == [4, 0, 6, 7] and pad[0, 1:].tolist() == [False, True, False, False]
    assert ids[1, 1:].tolist() == [4, 5, 6, 7] and not pad[1, 1:].any()
    assert b[PERT_GENE].tolist() == [1, 9, -1]
    X = screen.X[:3].toarray()
    ref = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    np.testing.assert_allclose(b[PERT_TARGET].numpy(), ref, rtol=1e-5)
    one = PerturbationCollator(_Base(), 2)(store, [5, 6], None)  # prediction: one perturbation for all
    assert one[K.GENE_IDS][:, 0].tolist() == [GeneVocab.N_SPECIAL + 2] * 2


def test_loss_is_kl_of_log1p_proportions_plus_log_total(parent):
    bm = tfmkit.load_model(parent)
    from dataclasses import replace

    from tfmkit.tasks import build_task

    cfg = bm.run_config
    cfg = replace(cfg, train=replace(cfg.train, task="perturbation",
                                     task_kwargs={"perturbation_key": "perturbation", "target_index": {"CD3E": 0}}))
    task = build_task(cfg, bm.vocab.n_genes).eval()
    torch.manual_seed(0)
    for p in task.head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    G = bm.vocab.n_genes
    cell, tok = torch.randn(3, 32), torch.randn(3, 5, 32)
    y = torch.rand(3, G) * (torch.rand(3, G) > 0.3)
    obs = torch.ones(3, G, dtype=torch.bool)
    obs[2, :5] = False
    batch = {K.OBSERVABLE: obs, PERT_TARGET: y, PERT_GENE: torch.tensor([3, -1, 7])}
    out = ModelOutput(cell=cell, token_states=tok)
    loss = task.loss(out, batch).detach().numpy()
    h = task.head(torch.cat([cell, tok[:, 0] * torch.tensor([[1.0], [0.0], [1.0]])], 1)).detach().numpy()
    for i in range(3):
        m = obs[i].numpy()
        yi = (y[i].numpy() * m)[m]
        z = h[i, :G][m]
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        ref = stats.entropy(yi / yi.sum(), q) + (np.log(yi.sum()) - h[i, G]) ** 2
        assert loss[i] == pytest.approx(ref, rel=1e-4)
    pred = task.predict(out, batch).detach().numpy()
    assert pred[2, :5].max() == 0 and pred[0].sum() == pytest.approx(np.exp(h[0, G]), rel=1e-4)


def test_head_reads_the_perturbation_token_state(parent):
    """Defect: the CLS-only head learned effects ~30x smaller than observed on the simulated
    screen; the head now also reads the perturbation token's own output state (zero for controls)."""
    from dataclasses import replace

    from tfmkit.tasks import build_task

    bm = tfmkit.load_model(parent)
    cfg = bm.run_config
    cfg = replace(cfg, train=replace(cfg.train, task="perturbation",
                                     task_kwargs={"perturbation_key": "perturbation", "target_index": {"CD3E": 0}}))
    task = build_task(cfg, bm.vocab.n_genes).eval()
    torch.manual_seed(0)
    for p in task.head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    obs = torch.ones(2, bm.vocab.n_genes, dtype=torch.bool)
    cell, tok = torch.randn(1, 32).expand(2, 32), torch.randn(2, 4, 32)  # same cell state, other tokens
    pert = task.predict(ModelOutput(cell=cell, token_states=tok), {K.OBSERVABLE: obs, PERT_GENE: torch.tensor([0, 1])})
    assert (pert[0] - pert[1]).abs().max() > 1e-3  # the token state changes the prediction
    ctrl = task.predict(ModelOutput(cell=cell, token_states=tok), {K.OBSERVABLE: obs, PERT_GENE: torch.tensor([-1, -1])})
    torch.testing.assert_close(ctrl[0], ctrl[1])  # no token: only the cell state counts
    cls = build_task(replace(cfg, train=replace(cfg.train, task_kwargs={**cfg.train.task_kwargs, "token_readout": False})),
                     bm.vocab.n_genes)
    assert cls.head[0].in_features == 32 and task.head[0].in_features == 64


def test_additive_shift_matches_brute_force():
    rng = np.random.default_rng(1)
    keys = [("A", "p1"), ("A", "p2"), ("B", "p1"), ("C", "p1"), ("C", "p2"), ("C", "p3")]
    delta = rng.normal(size=(len(keys), 7))
    got = pp.additive_shift(keys, delta, "C", ["p1", "p2"])
    np.testing.assert_allclose(got, [(delta[0] + delta[2]) / 2, delta[1]])  # C itself excluded
    np.testing.assert_allclose(pp.additive_shift(keys, delta, "A", ["p1", "p3"]), [(delta[2] + delta[3]) / 2, delta[5]])
    assert pp.additive_shift(keys, delta, "C", ["p3"]) is None  # p3 only trained in the held-out context


def test_metrics_match_independent_references():
    rng = np.random.default_rng(0)
    pred, obs, ctrl = rng.normal(size=(5, 30)), rng.normal(size=(5, 30)), rng.normal(size=30)
    np.testing.assert_allclose(pp.pseudobulk_mae(pred, obs), [np.mean(np.abs(a - b)) for a, b in zip(pred, obs)])
    hv = np.arange(30) < 10
    np.testing.assert_allclose(pp.pseudobulk_mae(pred, obs, hv), np.abs(pred - obs)[:, :10].mean(1))
    np.testing.assert_allclose(pp.pearson_delta(pred, obs, ctrl),
                               [stats.pearsonr(a - ctrl, b - ctrl)[0] for a, b in zip(pred, obs)])
    assert np.isnan(pp.pearson_delta(np.tile(ctrl, (2, 1)), obs[:2], ctrl)).all()
    brute = [float(all(np.linalg.norm(pred[i] - obs[i]) < np.linalg.norm(pred[i] - obs[j])
                       for j in range(5) if j != i)) for i in range(5)]
    assert pp.centroid_accuracy(pred, obs).tolist() == brute
    assert pp.centroid_accuracy(obs + 1e-3, obs).tolist() == [1.0] * 5
    assert pp.centroid_accuracy(np.tile(ctrl, (5, 1)), obs).sum() <= 1
    change = np.zeros(30)
    change[[3, 7, 11]] = [5.0, -4.0, 1.0]
    assert pp.de_overlap((ctrl + change)[None], ctrl, [np.array([3, 7])])[0] == 1.0
    assert pp.de_overlap((ctrl + change)[None], ctrl, [np.array([3, 11])])[0] == 0.5
    assert np.isnan(pp.de_overlap(ctrl[None], ctrl, [np.array([3])])[0])
    cells, controls = rng.normal(size=(30, 6)), rng.normal(size=(40, 6))
    cells[:, 2] += 3.0
    p = [stats.mannwhitneyu(cells[:, g], controls[:, g]).pvalue for g in range(6)]
    assert pp.de_genes(cells, controls).tolist() == np.flatnonzero(stats.false_discovery_control(p) < 0.05).tolist()


def test_finetune_records_parent_task_and_split(fitted, parent, screen):
    cfg = json.loads((fitted / "config.json").read_text())
    assert cfg["task"] == "perturbation" and cfg["parent"]["model"] == str(parent.resolve())
    kw = cfg["train"]["task_kwargs"]
    assert kw["split"] == "context" and kw["holdout"] == "B" and kw["eval_contexts"] == ["B"]
    assert kw["heldout_perturbations"] == sorted(TARGETS)
    vocab = tfmkit.load_model(parent).vocab
    assert kw["target_index"] == dict(zip(TARGETS, vocab.gene_index(TARGETS).tolist()))
    a = screen[:8].copy()
    tfmkit.embed(a, fitted)  # a normal model directory
    assert a.obsm["X_tfmkit"].shape == (8, 32)


def test_benchmark_rows_and_learned_knockdown(fitted, screen):
    res, per = pp.benchmark_perturbation_prediction(fitted, screen, n_control=24)
    assert set(res["embedding"]) == {"finetuned_model", "finetuned_model_absolute", "control_mean", "train_mean",
                                     "linear_gene_embedding", "additive_shift"}
    assert set(res["metric"]) == set(pp.METRICS) and (res["task"] == "perturbation_prediction").all()
    assert set(per["context"]) == {"B"} and set(per["perturbation"]) == set(TARGETS)
    v = res.set_index(["embedding", "metric"])["value"]
    assert v["control_mean", "mae"] == pytest.approx(per.query("embedding == 'control_mean' and metric == 'mae'")["value"].mean())
    # additive_shift: ctrl(B) + pseudobulk(A, p) - ctrl(A), brute force in log1p(1e4) space
    X = screen.X.toarray()
    L = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    lab, ctx = screen.obs["perturbation"].astype(str).to_numpy(), screen.obs["context"].astype(str).to_numpy()
    m = lambda p, c: L[(lab == p) & (ctx == c)].mean(0)  # noqa: E731
    brute = {p: np.abs(m("non-targeting", "B") + m(p, "A") - m("non-targeting", "A") - m(p, "B")).mean()
             for p in TARGETS}
    got = per.query("embedding == 'additive_shift' and metric == 'mae'").set_index("perturbation")["value"]
    for p in TARGETS:
        assert got[p] == pytest.approx(brute[p], rel=1e-4)
    # the model predicts each target knocked down in the held-out context, from its controls only
    bm, task = pp.load_perturbation_model(fitted)
    store = Corpus.from_adatas({"x": screen}, vocab=bm.vocab)
    ctrl_b = np.flatnonzero((screen.obs["perturbation"] == "non-targeting").to_numpy() & (screen.obs["context"] == "B").to_numpy())
    pred = pp.predict_pseudobulk(bm, task, store, ctrl_b, TARGETS)
    for i, g in enumerate(TARGETS):
        gi = bm.vocab.gene_index([g])[0]
        others = [pred[j, gi] for j in range(4) if j != i]
        assert pred[i, gi] < 0.8 * min(others), (g, pred[i, gi], others)


def test_bad_input_one_line_errors_and_reported_drops(parent, screen, tmp_path, capsys):
    no_ctrl = screen[screen.obs["perturbation"] != "non-targeting"].copy()
    with pytest.raises(TfmkitError, match="no control cells: no cell has obs\\['perturbation'\\] == 'non-targeting'"):
        finetune_perturbation(parent, no_ctrl, tmp_path / "a", steps=2)
    with pytest.raises(TfmkitError, match="--holdout 'C' is not a context"):
        finetune_perturbation(parent, screen, tmp_path / "b", split="context", holdout="C", steps=2)
    with pytest.raises(TfmkitError, match="obs has no perturbation column 'gene'"):
        finetune_perturbation(parent, screen, tmp_path / "c", layout="replogle2022", steps=2)
    assert not list(tmp_path.iterdir())  # nothing written
    odd = screen.copy()
    lab = odd.obs["perturbation"].astype(str).to_numpy().copy()
    lab[lab == TARGETS[0]] = "NOTAGENE1"
    odd.obs["perturbation"] = lab
    ft = finetune_perturbation(parent, odd, tmp_path / "d", split="perturbation", holdout=TARGETS[1], steps=2,
                               val_every=0)
    assert "dropped 48 cells of 1 perturbation(s) whose target is not in the model's vocabulary (NOTAGENE1)" in capsys.readouterr().err
    kw = json.loads((ft / "config.json").read_text())["train"]["task_kwargs"]
    assert kw["dropped_targets"] == ["NOTAGENE1"] and kw["n_dropped_cells"] == 48
    assert "NOTAGENE1" not in kw["target_index"] and kw["heldout_perturbations"] == [TARGETS[1]]
    none = screen.copy()
    none.obs["perturbation"] = np.where(screen.obs["perturbation"] == "non-targeting", "non-targeting", "XX")
    with pytest.raises(TfmkitError, match="is in the model's vocabulary"):
        finetune_perturbation(parent, none, tmp_path / "e", steps=2)
    with pytest.raises(TfmkitError, match="was trained with task 'pretrain'"):
        pp.benchmark_perturbation_prediction(parent, screen)


def test_plan_split_holds_out_perturbations_or_a_context(screen):
    from tfmkit.finetune.perturbation import plan_split, resolve_columns

    cols = resolve_columns(screen, "tfmkit")
    vocab = GeneVocab(GENES)
    lab, ctx = screen.obs["perturbation"].astype(str).to_numpy(), screen.obs["context"].astype(str).to_numpy()
    p = plan_split(screen, cols, vocab, "perturbation", seed=3)
    assert len(p["heldout_perturbations"]) == 1 and p["eval_contexts"] == ["A", "B"]  # round(0.2 * 4) = 1
    held = p["heldout_perturbations"][0]
    assert not p["train_cells"][lab == held].any() and not p["train_cells"][lab == "non-targeting"].any()
    assert p["train_cells"][(lab != held) & (lab != "non-targeting")].all()
    c = plan_split(screen, cols, vocab, "context", "A", train_controls=True)
    assert c["heldout_perturbations"] == sorted(TARGETS) and c["eval_contexts"] == ["A"]
    assert not c["train_cells"][(ctx == "A") & (lab != "non-targeting")].any()
    assert c["train_cells"][lab == "non-targeting"].all()  # controls of every context, A included
    assert plan_split(screen, cols, vocab, "context")["holdout"] == "A"  # default: first context
