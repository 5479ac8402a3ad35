"""`tfmkit doctor` and a minimal end-to-end `tfmkit demo` (a few steps, real bundled data)."""

import pandas as pd
import pytest

from tfmkit.errors import TfmkitError


def test_doctor_reports_ok(capsys):
    from tfmkit.doctor import run_doctor

    assert run_doctor() is True
    out = capsys.readouterr().out
    assert "torch" in out and "data: balf" in out


@pytest.mark.slow
def test_demo_writes_full_report(tmp_path):
    from tfmkit.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(out, quick=True, steps=3)
    for name in ("report.md", "results.csv", "loss_curve.png", "embedding_pbmc68k.png",
                 "embedding_wu2020.png", "model/model.safetensors", "train_log.csv"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv")
    assert {"embedding", "task", "metric", "value"} <= set(df.columns)
    knn = df[(df.task == "knn_5fold") & (df.metric == "accuracy")]
    assert set(knn.embedding) == {"tfmkit", "pca50", "lognorm", "random_label_shuffle"}
    assert set(knn.dataset) == {"pbmc68k", "wu2020"}
    text = report.read_text()
    assert "kNN label accuracy" in text and "Reading:" in text
    with pytest.raises(TfmkitError, match="--overwrite"):
        run_demo(out, quick=True, steps=3)  # never silently replaces an earlier report
