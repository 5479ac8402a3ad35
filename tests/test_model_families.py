"""Every registered model family honours the protocol end to end (issue 8, item 8):
pretrain 3 steps -> save -> load -> embed -> gene tables, plus the ModelOutput contract."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml

import tfmkit
from tfmkit.config import CONFIG_DIR, load_config
from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.models import MODELS, FoundationModel, ModelOutput, build_model, family_class
from tfmkit.training import pretrain

TINY = {"dim": 32, "depth": 1, "heads": 2}


def _shipped_config(family: str) -> str:
    """The shipped ``*_tiny`` config of a family (every family must ship one)."""
    for path in sorted(CONFIG_DIR.glob("*_tiny.yaml")):
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        if model.get("family", "txfm") == family:
            return path.stem
    raise AssertionError(f"model family {family!r} ships no configs/<name>_tiny.yaml")


def _small_overrides(family: str) -> list[str]:
    names = {f.name for f in fields(family_class(family).config_class)}
    return [f"model.{k}={v}" for k, v in TINY.items() if k in names] + [
        "data.n_revealed=12", "data.min_cells=1", "data.val_fraction=0.1", "train.batch_size=8",
        "train.steps=3", "train.checkpoint_every=3", "train.log_every=1", "train.val_every=0"]


@pytest.mark.parametrize("family", MODELS.names())
def test_family_pretrain_save_load_embed_gene_tables(family, tmp_path, two_panels):
    cfg = load_config(_shipped_config(family), _small_overrides(family))
    assert cfg.model.family == family
    model_dir = pretrain(cfg, tmp_path / "run", adatas=two_panels, progress=False)
    bundle = tfmkit.load_model(model_dir)
    assert isinstance(bundle, tfmkit.TrainedModel) and bundle.family == family and bundle.step == 3
    assert not hasattr(bundle.module, "vocab") and not hasattr(bundle.module, "run_config")

    unseen = two_panels["panel_b"].copy()
    before = unseen.copy()
    tfmkit.embed(unseen, bundle, key="X_fam")
    assert unseen.obsm["X_fam"].shape == (unseen.n_obs, bundle.module.embedding_dim)
    assert np.isfinite(unseen.obsm["X_fam"]).all() and unseen.obsm["X_fam"].std(0).max() > 0
    assert unseen.uns["tfmkit"]["X_fam"]["family"] == family
    assert (unseen.X != before.X).nnz == 0 and unseen.var.equals(before.var)  # nothing else changed
    assert unseen.uns["tfmkit"]["X_fam"]["per_cell_seed"] is True
    # a cell's embedding depends on the cell alone: not on the batch size or the row order
    perm = np.random.default_rng(0).permutation(unseen.n_obs)
    other = before[perm].copy()
    tfmkit.embed(other, bundle, key="X_fam", batch_size=3)
    np.testing.assert_allclose(other.obsm["X_fam"], unseen.obsm["X_fam"][perm], rtol=0, atol=1e-5)

    tables = bundle.module.gene_tables()
    assert tables, "a family exports at least one gene table"
    for kind, table in tables.items():
        df = tfmkit.gene_embeddings(bundle, kind=kind)
        assert list(df.index) == list(bundle.vocab.genes) and df.shape[1] == table.shape[1]


@pytest.mark.parametrize("family", MODELS.names())
def test_family_declares_what_it_returns(family):
    cls = family_class(family)
    assert issubclass(cls, FoundationModel) and cls.family == family and "tiny" in cls.presets
    names = {f.name for f in fields(cls.config_class)}
    model = build_model(f"{family}/tiny", 20, **{k: v for k, v in TINY.items() if k in names}).eval()
    ids = torch.arange(6).repeat(3, 1) + 4  # (3, 6)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[0, 4:] = True
    batch = {K.GENE_IDS: ids, K.VALUES: torch.rand(3, 6), K.PADDING: padding}
    out = model(batch)
    assert isinstance(out, ModelOutput) and out.available() >= set(cls.outputs)
    d = model.embedding_dim
    assert model.cell_embedding(batch, pooling="cls").shape == (3, d)
    assert model.cell_embedding(batch, pooling="cls+mean").shape == (3, 2 * d)
    with pytest.raises(TfmkitError, match="pooling must be one of cls, mean, cls\\+mean"):
        model.cell_embedding(batch, pooling="max")


def test_build_model_spec_forms_and_errors():
    assert build_model("S", 10, decoder_layers=0).config.decoder_layers == 0  # legacy form
    assert build_model("txfm/S", 10).config.dim == 384
    with pytest.raises(TfmkitError, match="unknown model family 'nope'; choose one of: .*txfm"):
        build_model("nope/tiny", 10)
    with pytest.raises(TfmkitError, match="unknown txfm model option\\(s\\) \\['width'\\]"):
        build_model("tiny", 10, width=3)


def test_embed_accepts_module_plus_vocab_and_refuses_a_bare_module(tmp_path, two_panels):
    # a bare module has no run config: it embeds with the default reveal rule (that of txfm_paper)
    cfg = load_config("txfm_paper", _small_overrides("txfm"))
    bundle = tfmkit.load_model(pretrain(cfg, tmp_path / "run", adatas=two_panels, progress=False))
    a = two_panels["panel_a"].copy()
    tfmkit.embed(a, bundle.module, vocab=bundle.vocab, key="X_m", n_revealed=12)  # default K else
    b = two_panels["panel_a"].copy()
    tfmkit.embed(b, bundle, key="X_m")  # K = 12 from the run config
    np.testing.assert_allclose(a.obsm["X_m"], b.obsm["X_m"], atol=1e-6)
    with pytest.raises(TfmkitError, match="needs its gene vocabulary: pass vocab="):
        tfmkit.embed(a, bundle.module)
    with pytest.raises(TfmkitError, match="expected a model directory"):
        tfmkit.embed(a, 42)


def test_one_library_size(tmp_path, two_panels):
    """``data.library_size`` sets both the targets and the model's output bound."""
    cfg = load_config("txfm_tiny", _small_overrides("txfm") + ["data.library_size=10000"])
    bundle = tfmkit.load_model(pretrain(cfg, tmp_path / "run", adatas=two_panels, progress=False))
    assert bundle.module.library_size == 1e4
    with pytest.raises(TfmkitError, match="model.library_size is no longer a model option"):
        load_config("txfm_tiny", ["model.library_size=1000"])


def test_resume_refuses_a_different_config(tmp_path, two_panels):
    cfg = load_config("txfm_tiny", _small_overrides("txfm") + ["train.steps=4"])
    pretrain(cfg, tmp_path / "run", adatas=two_panels, progress=False, stop_after=2)
    other = load_config("txfm_tiny", _small_overrides("txfm") + ["train.steps=40", "train.lr=0.01"])
    with pytest.raises(TfmkitError, match="different config \\(train.lr, train.steps differ"):
        pretrain(other, tmp_path / "run", adatas=two_panels, progress=False, resume=True)
