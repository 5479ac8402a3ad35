"""CLI end to end on tiny data, and one-line errors with non-zero exit on bad input."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from conftest import GENES, make_counts

TINY = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
        "data.n_revealed=12", "data.min_cells=1", "train.batch_size=8", "train.steps=3",
        "train.val_every=0"]


def tfmkit(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tfmkit.cli", *map(str, args)], capture_output=True,
                          text=True, env={"TFMKIT_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, pattern):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert pattern in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_counts(40, GENES[:30], seed=1).write_h5ad(d / "a.h5ad")
    make_counts(40, GENES[10:], seed=2).write_h5ad(d / "b.h5ad")
    tfmkit("pretrain", "--data", d / "a.h5ad", "--data", d / "b.h5ad", "--out", d / "run", *TINY)
    return d


def test_pretrain_then_embed(trained):
    d = trained
    assert (d / "run" / "model" / "model.safetensors").is_file()
    tfmkit("embed", "--model", d / "run", "--input", d / "a.h5ad", "--output", d / "emb.h5ad")
    out = ad.read_h5ad(d / "emb.h5ad")
    src = ad.read_h5ad(d / "a.h5ad")
    assert out.obsm["X_tfmkit"].shape == (40, 32) and np.isfinite(out.obsm["X_tfmkit"]).all()
    assert list(out.var_names) == list(src.var_names)  # .var kept
    assert out.uns["tfmkit"]["X_tfmkit"]["n_genes_vocab"] == 40
    # refuses to overwrite the output silently
    assert_one_line_error(tfmkit("embed", "--model", d / "run", "--input", d / "a.h5ad", "--output",
                                 d / "emb.h5ad", check=False), "--overwrite")


def test_help_on_every_command():
    for cmd in (["--help"], ["pretrain", "--help"], ["embed", "--help"], ["demo", "--help"],
                ["doctor", "--help"], ["benchmark", "--help"]):
        assert "Usage" in tfmkit(*cmd).stdout


def test_non_integer_counts(trained, tmp_path):
    a = make_counts(10, GENES[:30])
    a.X = a.X.multiply(0.37).tocsr()
    a.write_h5ad(tmp_path / "lognorm.h5ad")
    assert_one_line_error(tfmkit("embed", "--model", trained / "run", "--input", tmp_path / "lognorm.h5ad",
                                 "--output", tmp_path / "o.h5ad", check=False), "integer")


def test_nan_counts(trained, tmp_path):
    a = make_counts(10, GENES[:30])
    X = a.X.toarray()
    X[0, 0] = np.nan
    a.X = X
    a.write_h5ad(tmp_path / "nan.h5ad")
    assert_one_line_error(tfmkit("pretrain", "--data", tmp_path / "nan.h5ad", "--out", tmp_path / "r",
                                 *TINY, check=False), "NaN")


def test_empty_file(trained, tmp_path):
    (tmp_path / "empty.h5ad").write_bytes(b"")
    assert_one_line_error(tfmkit("embed", "--model", trained / "run", "--input", tmp_path / "empty.h5ad",
                                 "--output", tmp_path / "o.h5ad", check=False), "empty")


def test_unknown_genes(trained, tmp_path):
    a = make_counts(10, [f"NOTAGENE{i}" for i in range(30)])
    a.write_h5ad(tmp_path / "alien.h5ad")
    assert_one_line_error(tfmkit("embed", "--model", trained / "run", "--input", tmp_path / "alien.h5ad",
                                 "--output", tmp_path / "o.h5ad", check=False), "vocabulary")


def test_corrupt_checkpoint(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained / "run" / "model", bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert_one_line_error(tfmkit("embed", "--model", bad, "--input", trained / "a.h5ad", "--output",
                                 tmp_path / "o.h5ad", check=False), "corrupt")


def test_missing_model_dir(tmp_path, trained):
    assert_one_line_error(tfmkit("embed", "--model", tmp_path / "nope", "--input", trained / "a.h5ad",
                                 "--output", tmp_path / "o.h5ad", check=False), "does not exist")


def test_bad_override(tmp_path):
    assert_one_line_error(tfmkit("pretrain", "--out", tmp_path / "r", "train.stepz=1", check=False),
                          "unknown TrainConfig option")


def test_benchmarks_on_a_real_trained_model(trained, tmp_path):
    import pandas as pd

    tfmkit("benchmark", "pretraining", "--model", trained / "run", "--input", trained / "b.h5ad",
           "--out", tmp_path / "pre", "--mask-rates", "0.5")
    pre = pd.read_csv(tmp_path / "pre" / "results.csv")
    assert {"model", "gene_mean"} <= set(pre.embedding)
    sp = pre[(pre.embedding == "model") & (pre.metric == "spearman")].value.iloc[0]
    assert -1 <= sp <= 1
    tfmkit("benchmark", "genes", "--model", trained / "run", "--out", tmp_path / "genes",
           "--databases", "hallmark")
    genes = pd.read_csv(tmp_path / "genes" / "results.csv")
    assert {"encoder", "decoder"} <= set(genes.embedding)
    assert (tmp_path / "genes" / "results.md").read_text().count("|") > 10
    # the embedded h5ad goes straight into the cell-type benchmark
    tfmkit("embed", "--model", trained / "run", "--input", trained / "a.h5ad", "--output", tmp_path / "e.h5ad")
    tfmkit("benchmark", "celltype", "--input", tmp_path / "e.h5ad", "--label-key", "cell_type",
           "--obsm", "X_tfmkit", "--fast", "--out", tmp_path / "ct", "--baselines", "lognorm,pca10")
    ct = pd.read_csv(tmp_path / "ct" / "results.csv")
    assert {"X_tfmkit", "lognorm", "pca10"} <= set(ct.embedding)
    assert_one_line_error(tfmkit("benchmark", "celltype", "--input", tmp_path / "e.h5ad", "--label-key",
                                 "no_such_column", "--obsm", "X_tfmkit", "--out", tmp_path / "ct2",
                                 check=False), "no_such_column")
