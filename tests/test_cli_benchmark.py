"""``tfmkit benchmark ...`` command-line behaviour (in-process): ``--out`` is checked before any
data is read (issue 11 #8), ``--layer raw`` / a missing layer (#8), batch-only mode (#11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GENES, make_counts
from test_cli import cli, error

BENCHMARKS = {  # every benchmark, pointed at inputs / models that do not exist
    "celltype": ["--input", "nope.h5ad", "--label-key", "cell_type"],
    "genes": ["--model", "no_model_dir"],
    "pretraining": ["--model", "no_model_dir", "--input", "nope.h5ad"],
    "perturbation": ["--input", "nope.h5ad"],
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_out_is_checked_before_any_work(name, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("the user's earlier results\n")
    # the existing results are reported, not the missing input/model (which would be read first)
    error("benchmark", name, *BENCHMARKS[name], "--out", out, match="already exist; pass --overwrite")
    assert (out / "results.csv").read_text() == "the user's earlier results\n"
    (tmp_path / "file").write_text("x")
    error("benchmark", name, *BENCHMARKS[name], "--out", tmp_path / "file", match="is not a directory")
    # with a usable --out the missing input is reported and the created folders are removed again
    error("benchmark", name, *BENCHMARKS[name], "--out", tmp_path / "new" / "deeper", match="does not exist")
    assert not (tmp_path / "new").exists()


@pytest.fixture
def lognorm_with_raw(tmp_path):
    """Log-normalised X, raw counts only in ``adata.raw``, an embedding in obsm."""
    a = make_counts(60, GENES, seed=4)
    a.raw = a.copy()
    X = a.X.toarray()
    a.X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(a.n_obs, 5)).astype(np.float32)
    a.write_h5ad(tmp_path / "in.h5ad")
    return tmp_path / "in.h5ad"


FAST = ["--n-seeds", "1", "--probes", "", "--baselines", "lognorm"]


def test_celltype_layer_raw_and_missing_layer(lognorm_with_raw, tmp_path):
    cli("benchmark", "celltype", "--input", lognorm_with_raw, "--label-key", "cell_type",
        "--layer", "raw", *FAST, "--out", tmp_path / "ok")
    df = pd.read_csv(tmp_path / "ok" / "results.csv")
    assert set(df.embedding) == {"lognorm"} and "nmi" in set(df.metric)
    error("benchmark", "celltype", "--input", lognorm_with_raw, "--label-key", "cell_type",
          "--layer", "counts", *FAST, "--out", tmp_path / "bad",
          match="layer 'counts' not found; available layers: raw")
    assert not (tmp_path / "bad").exists()


def test_celltype_needs_labels_or_batches(lognorm_with_raw, tmp_path):
    error("benchmark", "celltype", "--input", lognorm_with_raw, "--obsm", "X_emb", "--out", tmp_path / "o",
          match="give --label-key (cell-type metrics and probes) and/or --batch-key")
    assert not (tmp_path / "o").exists()


def test_celltype_batch_only_without_labels(lognorm_with_raw, tmp_path):
    res = cli("benchmark", "celltype", "--input", lognorm_with_raw, "--batch-key", "batch",
              "--obsm", "X_emb", "--no-baselines", "--n-seeds", "1", "--out", tmp_path / "o")
    assert "batch-mixing metrics only" in res.stdout
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert "ilisi" in set(df.metric)
    assert not {"nmi", "ari", "asw_label", "clisi"} & set(df.metric)  # nothing scored against labels


@pytest.mark.parametrize("name", ["celltype", "genes", "pretraining"])
def test_max_cells_zero_is_refused_before_any_work(name, tmp_path):
    error("benchmark", name, *BENCHMARKS[name], "--max-cells", "0", "--out", tmp_path / "o",
          match="--max-cells must be a positive number of cells (or omitted to keep every cell), got 0")
    assert not (tmp_path / "o").exists()


def test_celltype_max_cells_subsamples_and_says_so(lognorm_with_raw, tmp_path):
    res = cli("benchmark", "celltype", "--input", lognorm_with_raw, "--label-key", "cell_type",
              "--layer", "raw", *FAST, "--max-cells", "40", "--seed", "1", "--out", tmp_path / "o")
    assert "subsampled 40 of 60 cells (--max-cells 40, --seed 1, stratified by 'cell_type')" in res.stderr
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert (df.n_cells_used == 40).all() and (df.max_cells == 40).all()
    assert "40 of 60 cells (--max-cells 40, --seed 1" in (tmp_path / "o" / "results.md").read_text()
