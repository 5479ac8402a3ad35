"""Streaming embed of an .h5ad in row blocks equals tfmkit.embed in memory; outputs are safe."""

import anndata as ad
import numpy as np
import pytest
from conftest import GENES, make_counts

import tfmkit
from tfmkit.config import load_config
from tfmkit.errors import TfmkitError
from tfmkit.streaming import embed_h5ad
from tfmkit.training import pretrain

SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
         "data.n_revealed=12", "data.min_cells=1", "train.batch_size=8", "train.steps=1",
         "train.val_every=0"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    data = {"a": make_counts(40, GENES[:30], seed=1), "b": make_counts(40, GENES[10:], seed=2)}
    return tfmkit.load_model(pretrain(load_config("txfm_tiny", SMALL), run, adatas=data, progress=False))


def test_streamed_embedding_equals_in_memory(tmp_path, model):
    a = make_counts(70, GENES[5:35] + ["NOTAGENE"], seed=3)
    a.layers["counts"] = a.X.copy()
    a.X = a.X * 0.5  # X is not counts: --layer counts points at them
    a.obsm["X_other"] = np.ones((70, 2), np.float32)
    a.uns["tfmkit"] = {"X_other": {"model": "earlier"}}
    src = tmp_path / "in.h5ad"
    a.write_h5ad(src)
    ref = a.copy()
    # all 30 known genes revealed: the reveal draw cannot differ between blocks and the whole
    tfmkit.embed(ref, model, layer="counts", n_revealed=40, batch_size=8)
    info = embed_h5ad(src, model, tmp_path / "out.h5ad", layer="counts", n_revealed=40, batch_size=8,
                      block_cells=20)
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert info["n_cells"] == 70 and info["dim"] == 32
    np.testing.assert_allclose(out.obsm["X_tfmkit"], ref.obsm["X_tfmkit"], atol=1e-5)
    np.testing.assert_array_equal(out.X.toarray(), a.X.toarray())  # nothing else changed
    np.testing.assert_array_equal(out.layers["counts"].toarray(), a.layers["counts"].toarray())
    assert list(out.var_names) == list(a.var_names) and out.obs.equals(a.obs)
    np.testing.assert_array_equal(out.obsm["X_other"], a.obsm["X_other"])
    prov = out.uns["tfmkit"]
    assert prov["X_other"] == {"model": "earlier"}
    assert prov["X_tfmkit"]["streamed"] and prov["X_tfmkit"]["block_cells"] == 16
    assert prov["X_tfmkit"]["n_genes_used"] == ref.uns["tfmkit"]["X_tfmkit"]["n_genes_used"] == 30
    embed_h5ad(src, model, tmp_path / "emb.npy", layer="counts", n_revealed=40, batch_size=8)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), ref.obsm["X_tfmkit"], atol=1e-5)


def test_outputs_are_checked_and_failures_leave_nothing(tmp_path, model):
    src = tmp_path / "in.h5ad"
    make_counts(10, GENES[:30]).write_h5ad(src)
    (tmp_path / "out.h5ad").write_text("mine")
    with pytest.raises(TfmkitError, match="already exists"):
        embed_h5ad(src, model, tmp_path / "out.h5ad")
    assert (tmp_path / "out.h5ad").read_text() == "mine"
    with pytest.raises(TfmkitError, match="must differ from the input"):
        embed_h5ad(src, model, src, overwrite=True)
    with pytest.raises(TfmkitError, match=r"must end in \.h5ad"):
        embed_h5ad(src, model, tmp_path / "out.csv")
    mouse = tmp_path / "mouse.h5ad"
    make_counts(10, [g.capitalize() for g in GENES[:30]]).write_h5ad(mouse)
    with pytest.raises(TfmkitError, match=r"none of the 30 input genes maps to the model vocabulary.*mouse/rat-style symbols"):
        embed_h5ad(mouse, model, tmp_path / "m.h5ad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "mouse.h5ad", "out.h5ad"]
