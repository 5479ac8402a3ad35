"""Cell-type fine-tuning and predict (issue 9 item 1): tiny models on a separable toy set."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

import tfmkit
from tfmkit.errors import TfmkitError
from tfmkit.finetune import finetune_celltype, predict
from tfmkit.finetune.freeze import apply_freeze
from tfmkit.models.grl import reverse_gradient as grad_reverse

from conftest import GENES, TINY_TXFM, pretrain_parent

TINY = TINY_TXFM + ["data.n_revealed=24", "data.expressed_only=true", "train.steps=2", "train.checkpoint_every=2"]


def separable(n: int = 90, seed: int = 0) -> ad.AnnData:
    """3 cell types over 24 genes: type ``t`` expresses its own 6 marker genes (and 6 shared
    ones) and none of the other types' markers."""
    rng = np.random.default_rng(seed)
    types = np.arange(n) % 3
    rate = np.zeros((n, 24))
    rate[:, 18:] = 5.0
    for t in range(3):
        rate[types == t, t * 6:(t + 1) * 6] = 20.0
    X = rng.poisson(rate).astype(np.float32)
    obs = pd.DataFrame({"cell_type": [f"type{t}" for t in types], "batch": rng.choice(["b0", "b1"], n)},
                       index=[f"c{i}" for i in range(n)])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=GENES[:24]))


@pytest.fixture(scope="module")
def toy():
    return separable()


@pytest.fixture(scope="module")
def parent(tmp_path_factory, toy):
    return pretrain_parent(tmp_path_factory.mktemp("parent") / "run", toy, TINY)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, parent, toy):
    out = tmp_path_factory.mktemp("ft") / "ft"
    return finetune_celltype(parent, toy, "cell_type", out, mode="head", steps=30, lr=1e-2,
                             batch_size=16, val_every=10, patience=0)


def test_predict_gets_training_cells_of_a_separable_set_right(fitted, toy):
    a = toy.copy()
    prov = predict(a, fitted)
    assert prov["accuracy"] >= 0.95
    assert (a.obs["tfmkit_pred"].astype(str) == a.obs["cell_type"]).mean() == prov["accuracy"]
    P = a.obsm["tfmkit_pred_proba"]
    assert P.shape == (a.n_obs, 3) and np.allclose(P.sum(1), 1, atol=1e-5)
    assert list(a.uns["tfmkit_pred_classes"]) == ["type0", "type1", "type2"]
    np.testing.assert_allclose(a.obs["tfmkit_pred_score"], P.max(1))
    assert (np.asarray(a.uns["tfmkit_pred_classes"])[P.argmax(1)] == a.obs["tfmkit_pred"].astype(str)).all()


def test_finetuned_model_is_a_normal_model_dir_recording_parent_and_task(fitted, parent, toy):
    cfg = json.loads((fitted / "config.json").read_text())
    assert cfg["task"] == "celltype" and cfg["parent"]["model"] == str(parent.resolve())
    assert cfg["train"]["init_from"] == str(parent.resolve())
    card = json.loads((fitted / "model_card.json").read_text())
    assert card["parent"]["model"] == str(parent.resolve()) and card["parent"]["task"] == "celltype"
    assert "Fine-tuned from" in (fitted / "MODEL_CARD.md").read_text()
    m = tfmkit.load_model(fitted)
    assert m.provenance["task"] == "celltype" and m.provenance["parent"]["model"] == str(parent.resolve())
    a = toy.copy()
    tfmkit.embed(a, m)
    assert a.obsm["X_tfmkit"].shape == (toy.n_obs, 32)


def test_head_mode_trains_only_the_head(tmp_path, parent, toy):
    m = finetune_celltype(parent, toy, "cell_type", tmp_path / "h", mode="head", steps=4, val_every=2,
                          patience=0)
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(m / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    head = load_file(str(m / "criterion.safetensors"))
    assert {"head.weight", "head.bias", "class_weights"} <= set(head)


def test_partial_mode_unfreezes_the_last_blocks_and_what_follows(tmp_path, parent, toy):
    m = tfmkit.load_model(parent).module
    n = apply_freeze(m, "partial", 1)
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert any(k.startswith("encoder.blocks.1.") for k in trainable)
    assert not any(k.startswith(("encoder.blocks.0.", "embed.", "encoder.cls")) for k in trainable)
    assert "encoder.norm.weight" in trainable
    assert n == sum(p.numel() for k, p in m.named_parameters() if k in trainable)
    with pytest.raises(TfmkitError, match="unfreeze_blocks must be between 1 and the model's 2 blocks"):
        apply_freeze(m, "partial", 3)
    out = finetune_celltype(parent, toy, "cell_type", tmp_path / "p", mode="partial", steps=4, val_every=2,
                            patience=0, lr=1e-2)
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder.blocks.0."))
    assert not torch.equal(before["encoder.blocks.1.mlp.fc1.weight"], after["encoder.blocks.1.mlp.fc1.weight"])


def test_balanced_class_weights_match_sklearn(tmp_path, parent):
    from sklearn.utils.class_weight import compute_class_weight

    a = separable(60)
    a = a[np.r_[0:45, 45:60:5]].copy()  # unbalanced
    m = finetune_celltype(parent, a, "cell_type", tmp_path / "w", steps=2, val_every=1, patience=0)
    w = load_file(str(m / "criterion.safetensors"))["class_weights"].numpy()
    y = a.obs["cell_type"].to_numpy()
    np.testing.assert_allclose(w, compute_class_weight("balanced", classes=np.unique(y), y=y), rtol=1e-6)


def test_focal_loss_matches_its_formula_and_grad_reverse_flips_gradients(parent):
    from tfmkit.data.collate_labels import LABEL
    from tfmkit.models.protocol import ModelOutput
    from tfmkit.tasks import build_task

    bm = tfmkit.load_model(parent)
    cfg = bm.run_config
    from dataclasses import replace

    kw = dict(classes=["a", "b", "c"], label_key="cell_type", loss="focal", class_weights=[1.0, 2.0, 0.5])
    task = build_task(replace(cfg, train=replace(cfg.train, task="celltype", task_kwargs=kw)), bm.vocab.n_genes).eval()
    cell = torch.randn(5, 32)
    y = torch.tensor([0, 1, 2, 1, -1])
    loss = task.loss(ModelOutput(cell=cell), {LABEL: y})
    p = torch.softmax(task.head(task.norm(cell)), -1)
    pt = p[torch.arange(4), y[:4]]
    ref = torch.tensor([1.0, 2.0, 0.5, 2.0]) * (1 - pt) ** 2 * -torch.log(pt)
    torch.testing.assert_close(loss[:4], ref, rtol=1e-5, atol=1e-6)
    assert loss[4] == 0  # unknown label contributes nothing
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.5))


def test_adversarial_batch_head_is_trained(tmp_path, parent, toy):
    m = finetune_celltype(parent, toy, "cell_type", tmp_path / "adv", batch_key="batch",
                          adversarial_batch=True, steps=3, val_every=1, patience=0)
    sd = load_file(str(m / "criterion.safetensors"))
    assert sd["adversary.2.weight"].shape == (2, 32)
    p = predict(toy.copy(), m)
    assert p["classes"] == ["type0", "type1", "type2"]


def test_early_stopping_keeps_the_best_validation_checkpoint(tmp_path, parent, toy):
    m = finetune_celltype(parent, toy, "cell_type", tmp_path / "es", steps=200, lr=3e-2, val_every=1,
                          patience=2)
    import csv

    rows = [r for r in csv.DictReader(open(m.parent / "train_log.csv")) if r["val_loss"]]
    vals = [float(r["val_loss"]) for r in rows]
    best = int(np.argmin(vals))
    assert len(rows) < 200 and len(rows) == best + 3  # stopped 2 evaluations after the best
    assert json.loads((m / "config.json").read_text())["step"] == int(rows[best]["step"])


def test_missing_labels_are_dropped_and_reported(tmp_path, parent, toy, capsys):
    a = toy.copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[:5, a.obs.columns.get_loc("cell_type")] = np.nan
    m = finetune_celltype(parent, a, "cell_type", tmp_path / "nan", steps=2, val_every=1, patience=0)
    assert "dropped 5 of 90 cells with no 'cell_type' label" in capsys.readouterr().err
    cfg = json.loads((m / "config.json").read_text())
    assert cfg["train"]["task_kwargs"]["n_dropped_unlabelled"] == 5
    assert json.loads((m / "model_card.json").read_text())["training_data"]["n_cells"] == 85


@pytest.mark.parametrize("change, msg", [
    ("single", "has a single class \\(type0\\); cell-type fine-tuning needs at least two"),
    ("column", "obs has no label column 'nope'"),
    ("adv", "--adversarial-batch needs --batch-key"),
])
def test_bad_labels_fail_in_one_line_and_write_nothing(tmp_path, parent, toy, change, msg):
    a = toy.copy()
    key, kw = "cell_type", {}
    if change == "single":
        a.obs["cell_type"] = "type0"
    elif change == "column":
        key = "nope"
    else:
        kw = {"adversarial_batch": True}
    with pytest.raises(TfmkitError, match=msg):
        finetune_celltype(parent, a, key, tmp_path / "bad", steps=2, **kw)
    assert list(tmp_path.iterdir()) == []


def test_failed_training_leaves_nothing(tmp_path, parent, toy):
    with pytest.raises(TfmkitError, match="needs validation cells"):
        finetune_celltype(parent, toy, "cell_type", tmp_path / "x", steps=2, val_fraction=0.0, patience=2)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "exists").mkdir()
    with pytest.raises(TfmkitError, match="exists; choose another --out"):
        finetune_celltype(parent, toy, "cell_type", tmp_path / "exists", steps=2)


def test_predict_reports_labels_absent_from_training(fitted, toy, capsys):
    a = toy.copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    a.obs.iloc[:9, a.obs.columns.get_loc("cell_type")] = "novel"
    prov = predict(a, fitted)
    assert "9 cells have labels absent from training (novel)" in capsys.readouterr().err
    assert prov["unseen_labels"] == ["novel"] and prov["n_cells_scored"] == 81
    assert a.obs["tfmkit_pred"].isin(["type0", "type1", "type2"]).all()


def test_predict_refuses_a_model_that_is_not_a_classifier(parent, toy):
    with pytest.raises(TfmkitError, match="not fine-tuned for cell types; run `tfmkit finetune celltype`"):
        predict(toy.copy(), parent)
