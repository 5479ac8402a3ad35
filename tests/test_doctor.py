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
