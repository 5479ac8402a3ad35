"""``tfmkit pretrain --resume`` restores the run's own config (issue 11 #1) and Ctrl-C says how
to resume (exit 130). In-process through typer's CliRunner on tiny synthetic data."""

from __future__ import annotations

import csv

import pytest

from conftest import GENES, make_counts
from test_cli import TINY, cli, error

STEPS = 4
RUN_ARGS = [*TINY[:-2], f"train.steps={STEPS}", "train.checkpoint_every=2", "train.val_every=0", "train.log_every=1",
            "train.lr=0.002"]


def _interrupt_after(monkeypatch, step: int) -> None:
    """Make ``tfmkit.training.pretrain`` stop (checkpointed) after ``step`` and raise Ctrl-C."""
    import tfmkit.training

    real = tfmkit.training.pretrain

    def interrupted(cfg, out_dir, **kw):
        real(cfg, out_dir, stop_after=step, progress=False, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(tfmkit.training, "pretrain", interrupted)


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch):
    """A run on two user files with non-default settings, interrupted (Ctrl-C) after step 2."""
    make_counts(40, GENES[:30], seed=1).write_h5ad(tmp_path / "a.h5ad")
    make_counts(40, GENES[10:], seed=2).write_h5ad(tmp_path / "b.h5ad")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        res = cli("pretrain", "--data", tmp_path / "a.h5ad", "--data", tmp_path / "b.h5ad",
                     "--out", run, *RUN_ARGS, code=130)
    assert res.stderr.strip().splitlines()[-1] == (  # after the mapped-genes lines of a and b
        f"interrupted: the checkpoint of step 2 in {run / 'model'} is kept; continue with: "
        f"tfmkit pretrain --out {run} --resume")
    return run


def _logged_steps(run) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(run / "train_log.csv"))]


def test_resume_restores_the_runs_own_config(interrupted_run):
    run = interrupted_run
    saved = (run / "config.yaml").read_bytes()
    cli("pretrain", "--out", run, "--resume")  # as the README writes it: no data, no overrides
    assert _logged_steps(run) == list(range(1, STEPS + 1))  # continued at 3, same schedule
    assert (run / "config.yaml").read_bytes() == saved
    lrs = [float(r["lr"]) for r in csv.DictReader(open(run / "train_log.csv"))]
    assert min(lrs[2:]) > 1e-6  # the saved schedule (lr 0.002), not a fresh default one


def test_resume_refuses_a_contradicting_command_line(interrupted_run, tmp_path):
    run = interrupted_run
    saved = (run / "config.yaml").read_bytes()
    error("pretrain", "--out", run, "--resume", "train.steps=10", "model.dim=64",
          match="model.dim (saved 32, given 64), train.steps (saved 4, given 10)")
    error("pretrain", "--out", run, "--resume", "--config", "txfm_s", match="contradicts it: --config")
    error("pretrain", "--out", run, "--resume", "--data", tmp_path / "a.h5ad", match="data.paths (saved [")
    error("pretrain", "--out", run, "--resume", "--layer", "counts",
          match="data.layer (saved None, given 'counts')")
    assert (run / "config.yaml").read_bytes() == saved
    assert _logged_steps(run) == [1, 2]
    # repeating the saved values is no contradiction
    cli("pretrain", "--out", run, "--resume", f"train.steps={STEPS}", "--data", tmp_path / "a.h5ad",
           "--data", tmp_path / "b.h5ad")
    assert _logged_steps(run) == list(range(1, STEPS + 1))


def test_resume_without_a_run(tmp_path):
    error("pretrain", "--out", tmp_path / "nothing", "--resume", match="has no config.yaml: there is no run to resume")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("train:\n  steps: 3\n")
    error("pretrain", "--out", tmp_path / "r", "--resume", match="has no checkpoint")


def test_interrupt_before_first_checkpoint(tmp_path, monkeypatch):
    import tfmkit.training

    def interrupted(cfg, out_dir, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfmkit.training, "pretrain", interrupted)
    res = cli("pretrain", "--out", tmp_path / "r", *TINY, code=130)
    assert "before the first checkpoint: nothing to resume" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
