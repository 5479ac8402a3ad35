"""Run configuration: presets, YAML loading, overrides and clear errors."""

import pytest

from tfmkit.config import CONFIG_DIR, load_config
from tfmkit.errors import TfmkitError


def test_tiny_preset_and_overrides():
    cfg = load_config("txfm_tiny", ["train.steps=7", "model.depth=3", "data.n_revealed=64"])
    assert cfg.model.preset == "tiny" and cfg.model.depth == 3 and cfg.model.dim == 128
    assert cfg.train.steps == 7 and cfg.data.n_revealed == 64
    assert cfg.train.objective == "poisson_nll"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0


def test_round_trip_dict():
    from tfmkit.config import RunConfig

    cfg = load_config("txfm_s")
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.model.dim == 384


@pytest.mark.parametrize("override, msg", [
    (["train.stepz=3"], "unknown TrainConfig option"),
    (["model.preset=XL"], "unknown model preset"),
    (["steps=3"], "section.key"),
    (["train.steps"], "section.key=value"),
    (["optim.lr=1"], "unknown config section"),
])
def test_bad_overrides_are_clear(override, msg):
    with pytest.raises(TfmkitError, match=msg):
        load_config("txfm_tiny", override)


def test_missing_config_file():
    with pytest.raises(TfmkitError, match="not found"):
        load_config("no_such_config")
