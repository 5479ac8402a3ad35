"""`tfmkit doctor`: fast (no heavy imports), reports versions, device and broken shipped files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import tfmkit.doctor as doctor


def test_doctor_reports_ok(capsys):
    assert doctor.run_doctor() is True
    out = capsys.readouterr().out
    for needle in ("torch", "leidenalg", "igraph", "h5py", "file: liao2020_balf.npz",
                   "file: hgnc_compact.tsv.gz", "corum_complexes.csv", "device (training default)"):
        assert needle in out, needle


def test_doctor_imports_no_heavy_package():
    """Speed by construction (≤ 2 s target): versions come from metadata, files are opened, not loaded."""
    code = ("import sys, tfmkit.doctor as d; d.run_doctor(); "
            "print(sorted(m for m in ('torch', 'anndata', 'scanpy', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_doctor_flags_a_corrupt_data_file(tmp_path, monkeypatch, capsys):
    files = tmp_path / "files"
    shutil.copytree(doctor.FILES_DIR, files)
    (files / "wu2020.npz").write_bytes(b"not a zip archive")
    monkeypatch.setattr(doctor, "FILES_DIR", files)
    assert doctor.run_doctor() is False
    out = capsys.readouterr().out
    assert "BROKEN" in out and "problems found" in out


def test_missing_package_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "REQUIRED", doctor.REQUIRED + [("no_such_module_xyz", "no-such-dist")])
    assert doctor.run_doctor() is False
    assert "MISSING" in capsys.readouterr().out


def _lognorm_with_counts_layer(path):
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from conftest import GENES

    rng = np.random.default_rng(0)
    C = rng.poisson(2.0, size=(50, len(GENES))).astype(np.float32)
    X = np.log1p(C / np.maximum(C.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    a = ad.AnnData(X=X, var=pd.DataFrame(index=GENES))
    a.layers["counts"] = sp.csr_matrix(C)
    a.write_h5ad(path)
    return C


def test_doctor_input_names_the_counts_layer_and_exits_nonzero(tmp_path):
    from typer.testing import CliRunner

    from tfmkit.cli import app

    _lognorm_with_counts_layer(tmp_path / "lognorm.h5ad")
    res = CliRunner().invoke(app, ["doctor", "--input", str(tmp_path / "lognorm.h5ad")])
    assert res.exit_code == 1, res.output
    assert "X holds log1p values, not raw counts" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "NOT usable as is: pass --layer counts"


def test_doctor_input_ok_on_raw_counts(tmp_path):
    from typer.testing import CliRunner

    from conftest import GENES, make_counts
    from tfmkit.cli import app

    make_counts(30, GENES, seed=3).write_h5ad(tmp_path / "raw.h5ad")
    res = CliRunner().invoke(app, ["doctor", "--input", str(tmp_path / "raw.h5ad")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["doctor", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "--model only applies with --input" in res.stderr
