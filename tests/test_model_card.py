"""Model cards (issue 11 B1) and the training-cell leakage check (B4)."""

from __future__ import annotations

import json

import numpy as np

import tfmkit
from tfmkit import model_card as mc
from tfmkit.config import load_config
from tfmkit.data.corpus import Corpus
from tfmkit.training import pretrain

SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
         "data.n_revealed=12", "data.min_cells=1", "data.val_fraction=0.1", "train.batch_size=8",
         "train.steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.val_every=0"]


def test_every_model_directory_has_a_card(tmp_path, two_panels):
    model_dir = pretrain(load_config("txfm_tiny", SMALL), tmp_path / "run", adatas=two_panels,
                         progress=False)
    card = json.loads((model_dir / mc.CARD_JSON).read_text())
    assert card["model"]["family"] == "txfm" and card["model"]["preset"] == "tiny"
    assert card["model"]["parameters"] == tfmkit.load_model(model_dir).module.num_parameters()
    data = card["training_data"]
    assert [d["name"] for d in data["datasets"]] == ["panel_a", "panel_b"]
    assert [d["n_cells"] for d in data["datasets"]] == [64, 48] and data["n_cells"] == 112
    assert [d["n_genes_observable"] for d in data["datasets"]] == [30, 30]
    t = card["training"]
    assert t["steps"] == 4 and t["seed"] == 0 and t["cells_per_s"] > 0 and t["peak_rss_mb"] > 10
    assert card["objective"]["objective"] == "poisson_nll" and card["versions"]["torch"]
    text = (model_dir / mc.CARD_MD).read_text()
    assert "# Model card: txfm/tiny" in text and "| panel_a | 64 | 30 |" in text
    assert "Known limitations" in text


def test_card_hashes_input_files(tmp_path, two_panels):
    path = tmp_path / "a.h5ad"
    two_panels["panel_a"].write_h5ad(path)
    cfg = load_config("txfm_tiny", SMALL + [f"data.paths=['{path}']"])
    card = mc.read_card(pretrain(cfg, tmp_path / "run", progress=False))
    (d,) = card["training_data"]["datasets"]
    import hashlib

    assert d["name"] == "a" and d["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_leakage_counts_training_cells(tmp_path, two_panels):
    model_dir = pretrain(load_config("txfm_tiny", SMALL), tmp_path / "run", adatas=two_panels,
                         progress=False)
    vocab = tfmkit.load_model(model_dir).vocab
    seen = Corpus.from_adata_for_inference(two_panels["panel_a"][:20].copy(), vocab)
    assert mc.leakage(model_dir, seen) == (20, 20)
    from conftest import GENES, make_counts

    new = Corpus.from_adata_for_inference(make_counts(15, GENES[:30], seed=9), vocab)
    assert mc.leakage(model_dir, new) == (0, 15)


def test_fingerprints_depend_on_counts_only():
    from conftest import GENES, make_counts

    a = Corpus.from_adatas({"x": make_counts(10, GENES[:20], seed=1)})
    fp = mc.cell_fingerprints(a)
    assert fp.dtype == np.uint64 and len(np.unique(fp)) == 10
    b = Corpus.from_adatas({"y": make_counts(10, GENES[:20], seed=1)[::-1].copy()}, vocab=a.vocab)
    np.testing.assert_array_equal(np.sort(mc.cell_fingerprints(b)), np.sort(fp))


def test_benchmark_with_model_warns_on_leakage_and_updates_the_card(tmp_path, two_panels):
    from typer.testing import CliRunner

    from conftest import GENES, make_counts
    from tfmkit.cli import app

    model_dir = pretrain(load_config("txfm_tiny", SMALL), tmp_path / "run", adatas=two_panels,
                         progress=False)
    seen = two_panels["panel_a"].copy()
    tfmkit.embed(seen, model_dir)
    seen.write_h5ad(tmp_path / "seen.h5ad")
    args = ["benchmark", "celltype", "--label-key", "cell_type", "--obsm", "X_tfmkit",
            "--baselines", "lognorm,pca10", "--probes", "knn", "--n-seeds", "2",
            "--model", str(tmp_path / "run")]
    res = CliRunner().invoke(app, args + ["--input", str(tmp_path / "seen.h5ad"),
                                          "--out", str(tmp_path / "r1")])
    assert res.exit_code == 0, res.output
    assert "warning: 64 of 64 evaluation cells (100.0%) of seen.h5ad were in the pretraining data" in res.stderr
    card = mc.read_card(model_dir)
    rows = [b for b in card["benchmarks"] if b["benchmark"] == "celltype"]
    assert rows and {r["embedding"] for r in rows} == {"X_tfmkit"}
    assert {r["baseline"] for r in rows} <= {"lognorm", "pca10"}
    assert "## Benchmarks (model vs best baseline" in (model_dir / mc.CARD_MD).read_text()

    new = make_counts(60, GENES[:30], seed=11)
    tfmkit.embed(new, model_dir)
    new.write_h5ad(tmp_path / "new.h5ad")
    res = CliRunner().invoke(app, args + ["--input", str(tmp_path / "new.h5ad"),
                                          "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    assert "pretraining data" not in res.stderr  # unseen cells: no warning
    assert len([b for b in mc.read_card(model_dir)["benchmarks"] if b["benchmark"] == "celltype"]) == len(rows)


def test_card_of_a_directory_corpus_and_a_prepared_store(tmp_path, two_panels):
    """`--data DIR`: one source (with its SHA-256) per file; fingerprints from a streamed store."""
    import hashlib

    from tfmkit.data.sources import open_corpus, resolve_paths

    folder = tmp_path / "data"
    folder.mkdir()
    for name, a in two_panels.items():
        a.write_h5ad(folder / f"{name}.h5ad")
    cfg = load_config("txfm_tiny", SMALL + [f"data.paths=['{folder}']"])
    model_dir = pretrain(cfg, tmp_path / "run", progress=False)
    card = mc.read_card(model_dir)
    by_name = {d["name"]: d for d in card["training_data"]["datasets"]}
    files = dict(resolve_paths([folder]))
    assert set(by_name) == set(files) and len(files) == 2
    for name, f in files.items():
        assert by_name[name]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    store = open_corpus([folder], max_in_memory_gb=0.0)  # streamed: no `.counts`, iter_csr instead
    assert not hasattr(store, "counts")
    np.testing.assert_array_equal(np.sort(mc.cell_fingerprints(store)),
                                  np.sort(np.load(model_dir / mc.FINGERPRINTS)))
