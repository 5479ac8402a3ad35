"""SSL adaptation (issue 9 item 2): continue the parent's own objective on target cells."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import tfmkit
from tfmkit.finetune import finetune_ssl

from conftest import pretrain_parent
from test_finetune_celltype import TINY, separable


def test_ssl_starts_from_the_parent_weights_and_its_learned_loss_parameters(tmp_path):
    toy = separable()
    parent = pretrain_parent(tmp_path / "p", toy, TINY + ["train.objective=nb_nll"])
    m = finetune_ssl(parent, separable(60, seed=1), tmp_path / "ssl", steps=1, lr=1e-9, batch_size=16)
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(m / "model.safetensors"))
    # lr ~ 0 for one step: the weights are the parent's (a random init would differ everywhere)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    pc, mc = load_file(str(parent / "criterion.safetensors")), load_file(str(m / "criterion.safetensors"))
    assert set(pc) == set(mc) and all(torch.allclose(pc[k], mc[k], atol=1e-6) for k in pc)
    cfg = json.loads((m / "config.json").read_text())
    assert cfg["train"]["objective"] == "nb_nll" and cfg["parent"]["parent_objective"] == "nb_nll"
    assert json.loads((m / "model_card.json").read_text())["training_data"]["n_cells"] == 60
    a = separable(20, seed=2)
    tfmkit.embed(a, m)
    assert a.obsm["X_tfmkit"].shape == (20, 32)


def test_ssl_from_scratch_keeps_the_architecture_but_not_the_weights(tmp_path):
    from typer.testing import CliRunner

    from tfmkit.cli import app

    toy = separable()
    parent = pretrain_parent(tmp_path / "p", toy, TINY)
    toy.write_h5ad(tmp_path / "t.h5ad")
    res = CliRunner().invoke(app, ["finetune", "ssl", "--model", str(parent), "--input", str(tmp_path / "t.h5ad"),
                                   "--out", str(tmp_path / "scratch"), "--steps", "1", "--lr", "1e-9",
                                   "--init", "random"])
    assert res.exit_code == 0, res.output
    m = tmp_path / "scratch" / "model"
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(m / "model.safetensors"))
    assert set(before) == set(after) and all(before[k].shape == after[k].shape for k in before)
    assert not all(torch.allclose(before[k], after[k], atol=1e-3) for k in before)  # fresh weights
    cfg = json.loads((m / "config.json").read_text())
    assert cfg["train"]["init_from"] is None and cfg["train"]["lr"] == 1e-9
