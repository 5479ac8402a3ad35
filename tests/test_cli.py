"""CLI end to end on tiny data, in-process (typer's CliRunner): one-line errors with exit 2,
outputs checked before work, and ``embed`` output = input + obsm[KEY] + uns['tfmkit']."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from conftest import GENES, make_counts
from tfmkit.cli import app

TINY = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
        "data.n_revealed=12", "data.min_cells=1", "train.batch_size=8", "train.steps=3",
        "train.val_every=0"]


def cli(*args, code: int = 0):
    """Run ``tfmkit ARGS`` in-process; fail with its output unless it exits with ``code``."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return res


def assert_one_line_error(res, pattern: str) -> None:
    """Exit status 2 and one stderr line ``error: ...`` containing ``pattern``, last, with no
    traceback (informational lines such as "mapped N of M genes" may precede it)."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in res.stderr, res.stderr
    assert pattern in errors[0], errors[0]


def error(*args, match: str):
    res = cli(*args, code=2)
    assert_one_line_error(res, match)
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_counts(40, GENES[:30], seed=1).write_h5ad(d / "a.h5ad")
    make_counts(40, GENES[10:], seed=2).write_h5ad(d / "b.h5ad")
    cli("pretrain", "--data", d / "a.h5ad", "--data", d / "b.h5ad", "--out", d / "run", *TINY)
    return d


def test_pretrain_then_embed(trained, tmp_path):
    d = trained
    assert (d / "run" / "model" / "model.safetensors").is_file()
    res = cli("embed", "--model", d / "run", "--input", d / "a.h5ad", "--output", tmp_path / "emb.h5ad")
    out, src = ad.read_h5ad(tmp_path / "emb.h5ad"), ad.read_h5ad(d / "a.h5ad")
    assert out.obsm["X_tfmkit"].shape == (40, 32) and np.isfinite(out.obsm["X_tfmkit"]).all()
    assert list(out.var_names) == list(src.var_names)
    assert out.uns["tfmkit"]["X_tfmkit"]["n_genes_vocab"] == 40
    # the gene coverage is printed: all 30 input genes are in the 40-gene vocabulary
    assert "a.h5ad: mapped 30 of 30 input genes to the model vocabulary (75.0% of the vocabulary)" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.h5ad"]  # no temp file left


def test_embed_keeps_x_layers_var_obs(trained, tmp_path):
    """Issue 11 #4: with --layer counts the output is the input + obsm[KEY] + uns['tfmkit']."""
    a = make_counts(30, GENES[:30], seed=3)
    a.layers["counts"] = a.X.copy()
    a.layers["other"] = sp.csr_matrix(np.arange(a.n_obs * a.n_vars, dtype=np.float32).reshape(a.shape))
    norm = a.X.multiply(1e4 / a.X.sum(axis=1)).tocsr()
    norm.data = np.log1p(norm.data)
    a.X = norm  # the user's log-normalised X (not counts)
    a.var["gene_symbol"] = [g.lower() for g in a.var_names]
    a.obsm["X_pca"] = np.ones((a.n_obs, 2), dtype=np.float32)
    a.write_h5ad(tmp_path / "in.h5ad")
    cli("embed", "--model", trained / "run", "--input", tmp_path / "in.h5ad", "--output",
           tmp_path / "out.h5ad", "--layer", "counts", "--key", "X_m")
    src, out = ad.read_h5ad(tmp_path / "in.h5ad"), ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(out.X.toarray(), src.X.toarray())
    assert set(out.layers) == {"counts", "other"}
    for k in src.layers:
        np.testing.assert_array_equal(out.layers[k].toarray(), src.layers[k].toarray())
    pd.testing.assert_frame_equal(out.var, src.var)
    pd.testing.assert_frame_equal(out.obs, src.obs)
    assert set(out.obsm) == {"X_pca", "X_m"} and out.obsm["X_m"].shape == (30, 32)
    np.testing.assert_array_equal(out.obsm["X_pca"], src.obsm["X_pca"])
    assert set(out.uns) == {"tfmkit"} and set(out.uns["tfmkit"]) == {"X_m"}
    # the embedding equals embedding the counts layer moved into X (it used the counts)
    b = src.copy()
    b.X = b.layers["counts"]
    cli("embed", "--model", trained / "run", "--input", _write(b, tmp_path / "b.h5ad"), "--output",
           tmp_path / "out_b.h5ad", "--key", "X_m")
    np.testing.assert_allclose(out.obsm["X_m"], ad.read_h5ad(tmp_path / "out_b.h5ad").obsm["X_m"], atol=1e-5)


def _write(a, path):
    a.write_h5ad(path)
    return path


def test_embed_checks_output_before_work(trained, tmp_path, monkeypatch):
    """Issue 11 #8: a bad --output fails at once (the model is never loaded), nothing is written."""
    import tfmkit

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(tfmkit, "load_model", boom)
    args = ["embed", "--model", trained / "run", "--input", trained / "a.h5ad", "--output"]
    error(*args, tmp_path / "missing_dir" / "x.h5ad", match="does not exist; create it first")
    (tmp_path / "exists.h5ad").write_bytes(b"user data")
    error(*args, tmp_path / "exists.h5ad", match="pass --overwrite")
    assert (tmp_path / "exists.h5ad").read_bytes() == b"user data"
    error(*args, tmp_path / "x.csv", match="must end in .h5ad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.h5ad"]


def test_embed_failure_leaves_no_partial_output(trained, tmp_path, monkeypatch):
    """The output is written to a temporary file and renamed: a failed write leaves nothing."""
    def fail_write(self, path, *a, **k):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", fail_write)
    res = CliRunner().invoke(app, ["embed", "--model", str(trained / "run"), "--input",
                                   str(trained / "a.h5ad"), "--output", str(tmp_path / "o.h5ad")])
    assert isinstance(res.exception, OSError) and list(tmp_path.iterdir()) == []


def test_non_integer_counts(trained, tmp_path):
    a = make_counts(10, GENES[:30])
    a.X = a.X.multiply(0.37).tocsr()
    error("embed", "--model", trained / "run", "--input", _write(a, tmp_path / "lognorm.h5ad"),
          "--output", tmp_path / "o.h5ad", match="integer")
    assert not (tmp_path / "o.h5ad").exists()


def test_missing_layer_lists_available(trained, tmp_path):
    a = make_counts(10, GENES[:30])
    a.layers["raw_counts"] = a.X.copy()
    error("embed", "--model", trained / "run", "--input", _write(a, tmp_path / "in.h5ad"),
          "--output", tmp_path / "o.h5ad", "--layer", "counts", match="available layers: ['raw_counts']")


def test_nan_counts(tmp_path):
    a = make_counts(10, GENES[:30])
    X = a.X.toarray()
    X[0, 0] = np.nan
    a.X = X
    error("pretrain", "--data", _write(a, tmp_path / "nan.h5ad"), "--out", tmp_path / "r", *TINY,
          match="NaN")


def test_empty_file(trained, tmp_path):
    (tmp_path / "empty.h5ad").write_bytes(b"")
    error("embed", "--model", trained / "run", "--input", tmp_path / "empty.h5ad", "--output",
          tmp_path / "o.h5ad", match="empty")


def test_unknown_genes(trained, tmp_path):
    a = make_counts(10, [f"NOTAGENE{i}" for i in range(30)])
    error("embed", "--model", trained / "run", "--input", _write(a, tmp_path / "alien.h5ad"),
          "--output", tmp_path / "o.h5ad", match="vocabulary")


def test_corrupt_checkpoint(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained / "run" / "model", bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    error("embed", "--model", bad, "--input", trained / "a.h5ad", "--output", tmp_path / "o.h5ad",
          match="corrupt")


def test_missing_model_dir(tmp_path, trained):
    error("embed", "--model", tmp_path / "nope", "--input", trained / "a.h5ad", "--output",
          tmp_path / "o.h5ad", match="does not exist")


def test_bad_override(tmp_path):
    error("pretrain", "--out", tmp_path / "r", "train.stepz=1", match="unknown TrainConfig option")
    assert not (tmp_path / "r").exists()


def test_help_on_every_command():
    cmds = [[], ["pretrain"], ["embed"], ["demo"], ["doctor"], ["ablate"], ["benchmark"],
            *[["benchmark", c] for c in ("celltype", "genes", "pretraining", "perturbation")]]
    for cmd in cmds:
        res = cli(*cmd, "--help")
        assert "Usage" in res.stdout, cmd
    root = cli("--help").stdout
    for name in ("pretrain", "embed", "demo", "doctor", "ablate", "benchmark"):
        assert name in root


def test_benchmarks_on_a_real_trained_model(trained, tmp_path):
    cli("benchmark", "pretraining", "--model", trained / "run", "--input", trained / "b.h5ad",
           "--out", tmp_path / "pre", "--mask-rates", "0.5")
    pre = pd.read_csv(tmp_path / "pre" / "results.csv")
    assert {"model", "gene_mean"} <= set(pre.embedding)
    assert set(pre[pre.embedding == "model"].metric) >= {"spearman"}
    cli("benchmark", "genes", "--model", trained / "run", "--out", tmp_path / "genes",
           "--databases", "hallmark")
    genes = pd.read_csv(tmp_path / "genes" / "results.csv")
    assert {"encoder", "decoder"} <= set(genes.embedding)
    assert (tmp_path / "genes" / "results.md").read_text().count("|") > 10
    # the embedded h5ad goes straight into the cell-type benchmark
    cli("embed", "--model", trained / "run", "--input", trained / "a.h5ad", "--output", tmp_path / "e.h5ad")
    cli("benchmark", "celltype", "--input", tmp_path / "e.h5ad", "--label-key", "cell_type",
           "--obsm", "X_tfmkit", "--fast", "--out", tmp_path / "ct", "--baselines", "lognorm,pca10")
    ct = pd.read_csv(tmp_path / "ct" / "results.csv")
    assert {"X_tfmkit", "lognorm", "pca10"} <= set(ct.embedding)
    error("benchmark", "celltype", "--input", tmp_path / "e.h5ad", "--label-key", "no_such_column",
          "--obsm", "X_tfmkit", "--out", tmp_path / "ct2", match="no_such_column")
    assert not (tmp_path / "ct2").exists()  # a failed benchmark leaves no directory behind


def test_low_vocabulary_coverage_is_refused_unless_allowed(trained, tmp_path):
    """3 of the 40 vocabulary genes (7.5% < 10%): refused with the cause; --allow-low-coverage embeds."""
    few = make_counts(20, GENES[:3] + [f"Mmgene{i}" for i in range(27)], seed=4)
    path = _write(few, tmp_path / "mouse.h5ad")
    args = ["embed", "--model", trained / "run", "--input", path, "--output"]
    error(*args, tmp_path / "x.h5ad", match="mouse.h5ad: 7.5% of the 40-gene model vocabulary is in the input")
    assert not (tmp_path / "x.h5ad").exists()
    res = cli(*args, tmp_path / "y.h5ad", "--allow-low-coverage")
    assert "mapped 3 of 30 input genes to the model vocabulary (7.5% of the vocabulary)" in res.stderr
    assert ad.read_h5ad(tmp_path / "y.h5ad").obsm["X_tfmkit"].shape == (20, 32)



def test_ablate_errors(tmp_path):
    error("ablate", "--grid", "no_such_grid", "--out", tmp_path / "abl", match="not found")
    error("ablate", "--grid", "smoke", "--seeds", "1,x", "--out", tmp_path / "abl",
          match="--seeds must be comma-separated integers, got '1,x'")
    assert not (tmp_path / "abl").exists()


def test_embed_streams_inputs_over_the_memory_budget(trained, tmp_path):
    """--max-in-memory-gb 0: the input is read in row blocks; same output contract."""
    res = cli("embed", "--model", trained / "run", "--input", trained / "a.h5ad", "--output",
              tmp_path / "s.h5ad", "--max-in-memory-gb", "0")
    assert "(streamed)" in res.stdout
    out, src = ad.read_h5ad(tmp_path / "s.h5ad"), ad.read_h5ad(trained / "a.h5ad")
    assert out.obsm["X_tfmkit"].shape == (40, 32) and list(out.var_names) == list(src.var_names)
    assert (out.X != src.X).nnz == 0
