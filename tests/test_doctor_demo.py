"""`tfmkit doctor` and a minimal end-to-end `tfmkit demo` (a few steps, real bundled data)."""

import pandas as pd
import pytest

from tfmkit.errors import TfmkitError


def test_doctor_reports_ok(capsys):
    from tfmkit.doctor import run_doctor

    assert run_doctor() is True
    out = capsys.readouterr().out
    assert "torch" in out and "file: liao2020_balf.npz" in out and "all good" in out


def test_demo_tiny_end_to_end(tmp_path):
    """The real demo path (pretrain -> embed -> registered benchmarks -> report) on the tiny
    budget; then the output-safety rules on the folder it wrote."""
    import tfmkit
    from tfmkit.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(out, tiny=True)
    for name in ("report.md", "results.csv", "loss_curve.png", "embedding_pbmc68k.png",
                 "embedding_wu2020.png", "model/model.safetensors", "train_log.csv", "config.yaml"):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial folder left
    df = pd.read_csv(out / "results.csv")
    assert {"dataset", "embedding", "task", "metric", "value"} <= set(df.columns)
    knn = df[(df.task == "knn_5fold") & (df.metric == "accuracy")]
    names = {"tfmkit_zero_shot", "tfmkit_ssl_adapted", "tfmkit_target_scratch", "tfmkit_random_init", "pca50", "lognorm",
             "depth_only_control", "random_label_shuffle"}
    from tfmkit.evaluation.scvi_baseline import scvi_available

    names |= {"scvi"} if scvi_available() else set()  # rows appear when the extra is installed
    assert set(knn.embedding) == names  # one name per embedding in every table
    assert set(knn.dataset) == {"pbmc68k", "wu2020"}
    assert set(knn[knn.embedding.str.startswith("tfmkit")].train_seed) == {0}
    ct = df[df.task == "clustering"]
    assert {"tfmkit_zero_shot", "tfmkit_ssl_adapted", "pca50", "lognorm", "random_label_shuffle"} <= set(ct.embedding)
    assert "knn" not in set(df.task) - {"knn_5fold"}  # one kNN protocol
    diag = df[df.task == "depth_diagnostic"].set_index(["dataset", "embedding"])["value"]
    assert ((diag >= 0) & (diag <= 1)).all() and ("pbmc68k", "tfmkit_zero_shot") in diag.index
    assert {"gene_recall", "mask90"} <= set(df.task)
    text = report.read_text()
    for phrase in ("kNN label accuracy", "Reading:", "Tiny budget", "fit on the evaluation cells themselves",
                   "depth only", "One training seed", "lower is better", "`tfmkit_zero_shot`"):
        assert phrase in text, phrase
    model = tfmkit.load_model(out / "model")
    assert tfmkit.gene_embeddings(model, kind="encoder").shape[0] > 100
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no extra seeds/SSL runs left

    with pytest.raises(TfmkitError, match="--overwrite"):
        run_demo(out, tiny=True)  # never silently replaces an earlier report
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TfmkitError, match=r"holds files the demo did not write \(notes.txt\)"):
        run_demo(out, tiny=True, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and report.read_text() == text


def test_depth_control_features_and_pc1_diagnostic():
    """Depth features against a hand count; the diagnostic is 1 for an embedding whose main
    axis is the number of expressed genes and near 0 for one independent of it."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    from tfmkit.demo import depth_features, pc1_depth_spearman

    X = np.array([[0, 2, 0], [1, 1, 1], [5, 0, 0]], dtype=np.float32)
    a = ad.AnnData(sp.csr_matrix(X))
    a.obs["n_counts"] = [10.0, 20.0, 40.0]
    np.testing.assert_allclose(depth_features(a), np.log1p([[1, 2], [3, 3], [1, 5]]), rtol=1e-6)
    np.testing.assert_allclose(depth_features(a, "n_counts")[:, 1], np.log1p([10, 20, 40]), rtol=1e-6)
    rng = np.random.default_rng(0)
    genes = rng.integers(100, 3000, 300).astype(float)
    E = np.column_stack([np.log(genes) * 10, rng.normal(size=(300, 3))])
    assert pc1_depth_spearman(E, genes) > 0.99
    assert pc1_depth_spearman(rng.normal(size=(300, 4)), genes) < 0.2


def test_palette_colours_are_distinct():
    from tfmkit.demo_report import palette

    for n in (5, 21, 40):
        assert len(set(palette(n))) == n


def test_demo_overwrite_replaces_only_its_own_files(tmp_path):
    from tfmkit.demo import _publish, check_out

    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_text("old")
    for name in ("report.md", "embedding_old.png", "results.csv"):
        (out / name).write_text("old")
    check_out(out, overwrite=True)  # only demo artefacts: accepted
    work = out / ".tfmkit-demo-partial-1"
    (work / "model").mkdir(parents=True)
    (work / "model" / "model.safetensors").write_text("new")
    (work / "report.md").write_text("new")
    _publish(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["model", "report.md"]
    assert (out / "model" / "model.safetensors").read_text() == "new"
    with pytest.raises(TfmkitError, match="not a directory"):
        check_out(out / "report.md", overwrite=True)


def test_demo_failure_leaves_no_output(tmp_path, monkeypatch):
    import tfmkit.training
    from tfmkit.demo import run_demo

    def boom(cfg, out_dir, **kw):
        (out_dir / "config.yaml").write_text("partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tfmkit.training, "pretrain", boom)
    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="interrupted"):
        run_demo(out, tiny=True)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "report.md").write_text("earlier demo")
    with pytest.raises(RuntimeError, match="interrupted"):
        run_demo(kept, tiny=True, overwrite=True)
    assert [p.name for p in kept.iterdir()] == ["report.md"]  # the earlier demo is untouched


def test_quick_budget_adapts_only_the_named_dataset(tmp_path, monkeypatch):
    """The quick budget's trims (issue 12: <= 5 min): SSL-adapted and from-scratch rows only on
    ``adapt_on`` datasets, no gene benchmarks, and the report says so. Run on the tiny budget
    with the quick budget's two trims."""
    from dataclasses import replace

    from tfmkit import demo

    assert demo.EVAL_BUDGETS["quick"].adapt_on == ("pbmc68k",)
    assert demo.EVAL_BUDGETS["quick"].gene_benchmarks is False
    assert demo.EVAL_BUDGETS["full"].adapt_on is None and demo.EVAL_BUDGETS["full"].gene_benchmarks
    trimmed = replace(demo.EVAL_BUDGETS["tiny"], adapt_on=("pbmc68k",), gene_benchmarks=False)
    monkeypatch.setitem(demo.EVAL_BUDGETS, "tiny", trimmed)
    report = demo.run_demo(tmp_path / "demo", tiny=True)
    df = pd.read_csv(tmp_path / "demo" / "results.csv")
    knn = df[(df.task == "knn_5fold") & (df.metric == "accuracy")]
    adapted = {"tfmkit_ssl_adapted", "tfmkit_target_scratch"}
    assert adapted <= set(knn[knn.dataset == "pbmc68k"].embedding)
    assert not adapted & set(knn[knn.dataset == "wu2020"].embedding)
    assert "tfmkit_zero_shot" in set(knn[knn.dataset == "wu2020"].embedding)
    assert not {"gene_recall", "mask90"} & set(df.task)
    assert "computed on pbmc68k only" in report.read_text()
