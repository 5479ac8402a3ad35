"""Hugging Face Hub layout (issue 11 Part B item 1): save_pretrained -> load, the card's Hub
metadata, loading ``hf://`` references from the local Hub cache offline, and one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import GENES, TINY_TXFM, make_counts, pretrain_parent
from typer.testing import CliRunner

import tfmkit
from tfmkit.cli import app
from tfmkit.errors import TfmkitError
from tfmkit.hub import CARD, parse_hub_ref, resolve_hub_model, save_pretrained

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    adata = make_counts(48, GENES, seed=3)
    return pretrain_parent(tmp_path_factory.mktemp("hub") / "run", adata,
                           TINY_TXFM + ["train.steps=2", "train.checkpoint_every=2"])


def _embedding(model, adata):
    a = adata.copy()
    tfmkit.embed(a, model, key="E", n_revealed=8)
    return a.obsm["E"]


def test_save_pretrained_round_trip_and_hub_card(model_dir, tmp_path):
    from huggingface_hub import ModelCard

    out = save_pretrained(model_dir, tmp_path / "shared")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "model_card.json", CARD} <= names
    assert not names & {"optimizer.safetensors", "rng.safetensors", "trainer_state.json"}  # no training state
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left
    card = ModelCard.load(out / CARD)  # huggingface_hub parses the card and its metadata
    assert card.data.library_name == "tfmkit" and "txfm" in card.data.tags
    assert "tfmkit" in card.text
    adata = make_counts(20, GENES, seed=9)
    np.testing.assert_allclose(_embedding(tfmkit.load_model(out), adata),
                               _embedding(tfmkit.load_model(model_dir), adata), rtol=0, atol=1e-6)
    with pytest.raises(TfmkitError, match="exists and is not an empty folder"):
        save_pretrained(model_dir, out)


def test_hf_reference_loads_from_the_local_hub_cache_offline(model_dir, tmp_path, monkeypatch):
    # the cache layout huggingface_hub writes: models--OWNER--NAME/{refs/main, snapshots/REV/...}
    repo = tmp_path / "cache" / "models--me--tiny-txfm"
    (repo / "snapshots").mkdir(parents=True)
    save_pretrained(model_dir, repo / "snapshots" / REV)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    path = resolve_hub_model("hf://me/tiny-txfm", cache_dir=tmp_path / "cache", local_files_only=True)
    assert path == repo / "snapshots" / REV
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # no network: the cache alone
    bundle = tfmkit.load_model("hf://me/tiny-txfm")
    adata = make_counts(12, GENES, seed=4)
    np.testing.assert_allclose(_embedding(bundle, adata), _embedding(tfmkit.load_model(model_dir), adata),
                               rtol=0, atol=1e-6)
    res = CliRunner().invoke(app, ["embed", "--model", "hf://me/tiny-txfm@" + REV, "--input",
                                   str(_write(adata, tmp_path / "in.h5ad")), "--output", str(tmp_path / "o.h5ad")])
    assert res.exit_code == 0, res.output
    with pytest.raises(TfmkitError, match="is not in the local Hugging Face cache"):
        tfmkit.load_model("hf://me/absent")


def _write(adata, path):
    adata.write_h5ad(path)
    return path


def test_bad_references_and_cli(model_dir, tmp_path):
    assert parse_hub_ref("hf://a/b@v1") == ("a/b", "v1") and parse_hub_ref("hf://a/b") == ("a/b", None)
    with pytest.raises(TfmkitError, match="is not a Hub model reference"):
        parse_hub_ref("hf://just-a-name")
    res = CliRunner().invoke(app, ["hub", "save", "--model", str(model_dir), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0 and "README.md" in res.output
    res = CliRunner().invoke(app, ["hub", "save", "--model", str(model_dir), "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "exists and is not an empty folder" in res.output
    shutil.rmtree(tmp_path / "s")


def test_push_without_network_is_a_one_line_error(model_dir, monkeypatch):
    import huggingface_hub.constants as hc

    from tfmkit.hub import push_to_hub

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(TfmkitError, match="upload to me/x failed .*offline mode.*huggingface-cli login"):
        push_to_hub(model_dir, "me/x")
