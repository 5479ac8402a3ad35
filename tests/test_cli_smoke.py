"""The only subprocess CLI tests: the console script, ``python -m tfmkit.cli``, and that
``--help`` of every command imports none of the heavy libraries (issue 8 item 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "scanpy", "anndata", "sklearn", "scipy", "pandas", "numpy", "matplotlib")
COMMANDS = [[], ["pretrain"], ["embed"], ["demo"], ["doctor"], ["ablate"], ["benchmark"],
            ["benchmark", "celltype"], ["benchmark", "genes"], ["benchmark", "pretraining"],
            ["benchmark", "perturbation"]]
ENV = {"TFMKIT_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def test_console_script_help():
    script = Path(sys.executable).parent / "tfmkit"
    assert script.is_file(), f"console script {script} missing: pip install -e . first"
    proc = _run([str(script), "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "Usage: tfmkit" in proc.stdout and "pretrain" in proc.stdout and "benchmark" in proc.stdout


def test_python_m_tfmkit_cli_help_and_error():
    proc = _run([sys.executable, "-m", "tfmkit.cli", "--help"])
    assert proc.returncode == 0 and "embed" in proc.stdout, proc.stderr
    proc = _run([sys.executable, "-m", "tfmkit.cli", "embed", "--model", "no_such_dir", "--input",
                 "x.h5ad", "--output", "/no/such/dir/o.h5ad"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: the directory /no/such/dir of --output /no/such/dir/o.h5ad does not exist; "
        "create it first or choose another path"]


def test_help_imports_no_heavy_library():
    """Each ``--help`` runs in one fresh interpreter; the heavy modules any of them imported are
    reported per command (all lists must stay empty)."""
    code = f"""
import json, sys
from typer.testing import CliRunner
from tfmkit.cli import app
heavy = {HEAVY!r}
found = {{"import tfmkit.cli": [m for m in heavy if m in sys.modules]}}
for cmd in {COMMANDS!r}:
    res = CliRunner().invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.stdout, (cmd, res.output)
    found[" ".join(["tfmkit", *cmd, "--help"])] = [m for m in heavy if m in sys.modules]
print(json.dumps(found))
"""
    proc = _run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(found) == len(COMMANDS) + 1
    assert {k: v for k, v in found.items() if v} == {}
