"""Pretraining loop: learning happens, logs/checkpoints are written, resume is exact."""

import csv

import pytest
import torch
from safetensors.torch import load_file

from tfmkit.config import load_config
from tfmkit.errors import TfmkitError
from tfmkit.training import pretrain

SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
         "data.n_revealed=12", "data.min_cells=1", "data.val_fraction=0.1",
         "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.val_every=3"]


def _cfg(steps, *extra):
    return load_config("txfm_tiny", SMALL + [f"train.steps={steps}", *extra])


def test_resume_after_interruption_is_exact(tmp_path, two_panels):
    cfg = _cfg(6, "model.drop_path=0.2")  # stochastic depth: the RNG state must be restored too
    full = pretrain(cfg, tmp_path / "full", adatas=two_panels, progress=False)
    part = tmp_path / "part"
    pretrain(cfg, part, adatas=two_panels, stop_after=3, progress=False)  # "killed" after step 3
    with pytest.raises(TfmkitError, match="--resume"):
        pretrain(cfg, part, adatas=two_panels, progress=False)  # never silently overwrite
    resumed = pretrain(cfg, part, adatas=two_panels, resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [int(r["step"]) for r in csv.DictReader(open(part / "train_log.csv"))]
    assert steps == list(range(1, 7))


def test_loss_decreases_and_log_columns(tmp_path, two_panels):
    cfg = _cfg(40, "train.lr=0.003")
    pretrain(cfg, tmp_path, adatas=two_panels, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert set(rows[0]) == {"step", "loss", "val_loss", "lr", "cells_per_s", "elapsed_s"}
    first = sum(float(r["loss"]) for r in rows[:5]) / 5
    last = sum(float(r["loss"]) for r in rows[-5:]) / 5
    assert last < first
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(vals) >= 2 and vals[-1] < vals[0]
    lrs = [float(r["lr"]) for r in rows]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 2 <= peak <= 6  # 10% warm-up of 40 steps, then cosine decay
    assert lrs[-1] < lrs[peak] / 100
    assert all(float(r["cells_per_s"]) > 0 for r in rows)


def test_checkpoint_layout_has_optimizer_and_vocab(tmp_path, two_panels):
    model_dir = pretrain(_cfg(2), tmp_path, adatas=two_panels, progress=False)
    names = {p.name for p in model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.json", "optimizer.safetensors",
            "trainer_state.json"} <= names
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp dirs left behind


def test_weight_decay_default_is_one_over_lr_steps(two_panels):
    from tfmkit.training import build_training

    cfg = _cfg(50, "train.lr=0.002")
    st = build_training(cfg, 10, torch.device("cpu"))
    assert st.optimizer.param_groups[0]["weight_decay"] == pytest.approx(1 / (0.002 * 50))
    assert st.optimizer.param_groups[0]["eps"] == 1e-6


@pytest.mark.parametrize("steps", [1, 3, 10, 1000])
def test_one_cycle_cosine_schedule(steps):
    import math

    from tfmkit.training import OneCycleCosine

    f = OneCycleCosine(steps, 0.1)
    vals = [f(s) for s in range(steps + 1)]
    warm = max(math.ceil(0.1 * steps), 1)
    assert vals[0] == pytest.approx(1 / 25)
    assert vals[warm] == pytest.approx(1.0)  # peak at the end of the 10% warm-up
    if steps > warm:
        assert vals[-1] == pytest.approx(1 / 25e4)
    assert all(a <= b + 1e-12 for a, b in zip(vals[:warm], vals[1:warm + 1]))  # rises
    assert all(a >= b - 1e-12 for a, b in zip(vals[warm:], vals[warm + 1:]))  # then decays
    if steps == 1000:  # cosine midpoint
        mid = warm + (steps - warm) // 2
        assert vals[mid] == pytest.approx(0.5, abs=0.01)
