"""``tfmkit finetune celltype|ssl`` and ``tfmkit predict`` through the CLI (one-line errors, no
partial output)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from tfmkit.cli import app
from tfmkit.config import load_config
from tfmkit.training import pretrain

from test_finetune_celltype import TINY, separable

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    toy = separable()
    toy.write_h5ad(d / "toy.h5ad")
    one = toy.copy()
    one.obs["cell_type"] = "type0"
    one.write_h5ad(d / "one.h5ad")
    parent = pretrain(load_config("txfm_tiny", TINY), d / "parent", adatas={"toy": toy}, progress=False)
    return d, parent


def test_finetune_celltype_then_predict(files):
    d, parent = files
    r = runner.invoke(app, ["finetune", "celltype", "--model", str(parent), "--input", str(d / "toy.h5ad"),
                            "--label-key", "cell_type", "--mode", "head", "--steps", "30", "--lr", "0.01",
                            "--batch-size", "16", "--patience", "0", "--out", str(d / "ft")])
    assert r.exit_code == 0, r.output
    model = d / "ft" / "model"
    assert json.loads((model / "config.json").read_text())["task"] == "celltype"
    r = runner.invoke(app, ["predict", "--model", str(model), "--input", str(d / "toy.h5ad"),
                            "--output", str(d / "pred.h5ad")])
    assert r.exit_code == 0, r.output
    assert "accuracy vs obs['cell_type']: 1.000 on 90 cells" in r.output
    out = ad.read_h5ad(d / "pred.h5ad")
    assert (out.obs["tfmkit_pred"].astype(str) == out.obs["cell_type"].astype(str)).all()
    assert out.obsm["tfmkit_pred_proba"].shape == (90, 3)
    r = runner.invoke(app, ["embed", "--model", str(model), "--input", str(d / "toy.h5ad"),
                            "--output", str(d / "emb.h5ad")])
    assert r.exit_code == 0, r.output


def test_single_class_is_one_line_error_and_writes_nothing(files):
    d, parent = files
    r = runner.invoke(app, ["finetune", "celltype", "--model", str(parent), "--input", str(d / "one.h5ad"),
                            "--label-key", "cell_type", "--out", str(d / "bad")])
    assert r.exit_code == 2
    assert "error: obs['cell_type'] has a single class (type0)" in r.output
    assert not (d / "bad").exists() and not list(d.glob(".bad.tmp-*"))


def test_predict_with_a_pretrained_model_is_refused_before_reading(files):
    d, parent = files
    r = runner.invoke(app, ["predict", "--model", str(parent), "--input", str(d / "missing.h5ad"),
                            "--output", str(d / "p2.h5ad")])
    assert r.exit_code == 2 and "not fine-tuned for cell types" in r.output
    assert not (d / "p2.h5ad").exists()


def test_finetune_ssl_records_parent_and_keeps_the_objective(files):
    d, parent = files
    r = runner.invoke(app, ["finetune", "ssl", "--model", str(parent), "--input", str(d / "toy.h5ad"),
                            "--steps", "4", "--batch-size", "16", "--out", str(d / "ssl")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((d / "ssl" / "model" / "config.json").read_text())
    assert cfg["task"] == "pretrain" and cfg["train"]["objective"] == "poisson_nll"
    assert cfg["parent"]["model"] == str(parent.resolve()) and cfg["step"] == 4
    from safetensors.torch import load_file

    a, b = load_file(str(parent / "model.safetensors")), load_file(str(d / "ssl" / "model" / "model.safetensors"))
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.fixture(scope="module")
def screen_files(tmp_path_factory):
    from test_finetune_perturbation import TINY as PTINY, toy_screen

    d = tmp_path_factory.mktemp("clipert")
    screen = toy_screen(n_per=12)
    screen.write_h5ad(d / "screen.h5ad")
    screen[screen.obs["perturbation"] != "non-targeting"].copy().write_h5ad(d / "noctrl.h5ad")
    parent = pretrain(load_config("txfm_tiny", PTINY), d / "parent", adatas={"toy": screen}, progress=False)
    return d, parent


def test_finetune_perturbation_then_benchmark(screen_files):
    d, parent = screen_files
    r = runner.invoke(app, ["finetune", "perturbation", "--model", str(parent), "--input", str(d / "screen.h5ad"),
                            "--split", "context", "--holdout", "B", "--steps", "4", "--batch-size", "16",
                            "--out", str(d / "ft")])
    assert r.exit_code == 0, r.output
    model = d / "ft" / "model"
    assert json.loads((model / "config.json").read_text())["task"] == "perturbation"
    r = runner.invoke(app, ["benchmark", "perturbation-prediction", "--model", str(model), "--input",
                            str(d / "screen.h5ad"), "--n-control", "8", "--out", str(d / "res")])
    assert r.exit_code == 0, r.output
    import pandas as pd

    res = pd.read_csv(d / "res" / "results.csv")
    assert {"embedding", "task", "metric", "value", "n_perturbations", "split", "holdout"} <= set(res.columns)
    # 5 metrics x (model, its delta/absolute variant, control_mean, train_mean, linear, additive_shift)
    assert set(res["embedding"]) >= {"finetuned_model", "control_mean", "train_mean", "additive_shift"}
    assert len(res) == 5 * res["embedding"].nunique() and set(res["holdout"]) == {"B"}
    assert (d / "res" / "per_perturbation.csv").exists() and "Perturbation prediction" in (d / "res" / "results.md").read_text()
    r = runner.invoke(app, ["benchmark", "perturbation-prediction", "--model", str(parent), "--input",
                            str(d / "screen.h5ad"), "--out", str(d / "res2")])
    assert r.exit_code == 2 and "error: " in r.output and "was trained with task 'pretrain'" in r.output
    assert not (d / "res2").exists()


def test_finetune_perturbation_without_controls_is_one_line_error(screen_files):
    d, parent = screen_files
    r = runner.invoke(app, ["finetune", "perturbation", "--model", str(parent), "--input", str(d / "noctrl.h5ad"),
                            "--out", str(d / "bad")])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: no control cells") and len(r.output.strip().splitlines()) == 1
    assert not (d / "bad").exists() and not list(d.glob(".bad.tmp-*"))


def test_datasets_simulate_perturbseq_with_contexts(tmp_path):
    out = tmp_path / "sim.h5ad"
    args = ["datasets", "simulate-perturbseq", "--out", str(out), "--contexts", "2", "--perturbations", "3",
            "--cells", "8", "--batches", "1", "--min-gene-frac", "0.1", "--seed", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "SIMULATED Perturb-seq" in r.output
    a = ad.read_h5ad(out)
    assert a.uns["simulated"] and sorted(a.obs["context"].unique()) == ["T cell", "macrophage"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.output
