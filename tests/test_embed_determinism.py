"""``tfmkit.embed`` gives a cell the same embedding in any batch (issue 12, item 1)."""

import numpy as np
import pytest
from conftest import GENES, make_counts

import tfmkit
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError
from tfmkit.inference import cell_seeds
from tfmkit.models import build_model


@pytest.fixture(scope="module")
def model():
    import torch

    torch.manual_seed(0)
    return build_model("txfm/tiny", len(GENES), dim=32, depth=1, heads=2, decoder_layers=1).eval()


def _embed(adata, model, **kw):
    a = adata.copy()
    tfmkit.embed(a, model, vocab=GeneVocab(GENES), n_revealed=8, key="E", **kw)
    return a


def test_batch_size_and_row_order_do_not_change_a_cells_embedding(model):
    adata = make_counts(40, GENES, seed=5)
    ref = _embed(adata, model, batch_size=64).obsm["E"]
    perm = np.random.default_rng(0).permutation(40)
    got = _embed(adata[perm].copy(), model, batch_size=7).obsm["E"]
    np.testing.assert_allclose(got, ref[perm], rtol=0, atol=1e-5)
    other = _embed(adata, model, batch_size=64, seed=1).obsm["E"]  # the seed does matter
    assert np.abs(other - ref).max() > 1e-3
    prov = _embed(adata, model, pooling="cls+mean").uns["tfmkit"]["E"]
    assert prov["pooling"] == "cls+mean" and prov["per_cell_seed"] is True and prov["n_revealed"] == 8


def test_cell_seeds_depend_on_the_cell_only():
    from tfmkit.data.corpus import Corpus

    adata = make_counts(10, GENES, seed=2)
    vocab = GeneVocab(GENES)
    a = cell_seeds(Corpus.from_adata_for_inference(adata, vocab), seed=0)
    b = cell_seeds(Corpus.from_adata_for_inference(adata[::-1].copy(), vocab), seed=0)
    assert np.array_equal(a, b[::-1]) and len(set(a.tolist())) == 10
    assert not np.array_equal(a, cell_seeds(Corpus.from_adata_for_inference(adata, vocab), seed=0, view=1))


def test_bad_pooling_is_refused(model):
    with pytest.raises(TfmkitError, match="pooling must be one of cls, mean, cls\\+mean"):
        _embed(make_counts(4, GENES), model, pooling="max")
