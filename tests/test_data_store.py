"""The in-memory Corpus implements the CountStore protocol with the documented shapes/values."""

import numpy as np
import pandas as pd
import torch
from conftest import GENES, make_counts

from tfmkit.data.corpus import Corpus, InMemoryStore
from tfmkit.data.store import CountStore


def _store():
    a = make_counts(30, GENES[:25], seed=1)
    b = make_counts(20, GENES[15:], seed=2)
    return {"a": a, "b": b}, Corpus.from_adatas({"a": a, "b": b})


def test_corpus_is_a_count_store():
    data, c = _store()
    assert isinstance(c, CountStore) and InMemoryStore is Corpus
    assert not isinstance(object(), CountStore)
    G = c.vocab.n_genes
    assert c.names == ["a", "b"] and c.n_cells == 50 and G == len(GENES)
    assert c.library_sizes.shape == (50,) and c.dataset_of_cell.dtype == np.int64
    assert isinstance(c.obs, pd.DataFrame) and len(c.obs) == 50 and list(c.obs["dataset"].unique()) == ["a", "b"]
    for d, name in enumerate(c.names):
        np.testing.assert_array_equal(c.observable[d], np.sort(c.vocab.gene_index(data[name].var_names)))


def test_dense_counts_observable_nonzero_vs_brute_force():
    data, c = _store()
    G = c.vocab.n_genes
    dense = np.zeros((50, G), dtype=np.float32)  # brute force: place every original column
    for d, (name, a) in enumerate(data.items()):
        rows = np.flatnonzero(c.dataset_of_cell == d)
        for j, g in enumerate(a.var_names):
            dense[rows, c.vocab.gene_index([g])[0]] = a.X[:, j].toarray().ravel()
    cells = np.array([49, 0, 31, 7, 30])
    got = c.dense_counts(cells)
    assert got.dtype == np.float32 and got.shape == (5, G)
    np.testing.assert_array_equal(got, dense[cells])
    np.testing.assert_array_equal(c.nonzero_cells(), (dense > 0).sum(0))
    mask = c.observable_mask(np.array([1, 0, 1]))
    assert mask.dtype == torch.bool and mask.shape == (3, G)
    assert torch.equal(mask, c.observable_mask(torch.tensor([1, 0, 1])))  # tensors accepted too
    for r, d in enumerate([1, 0, 1]):
        assert set(torch.nonzero(mask[r]).ravel().tolist()) == set(c.observable[d].tolist())
    np.testing.assert_allclose(c.library_sizes, dense.sum(1))  # all genes of these files are in the vocab


def test_split_is_a_seeded_partition():
    _, c = _store()
    tr, va = c.split(0.2, seed=4)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(50))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert (c.dataset_of_cell[va] == 0).sum() == 6 and (c.dataset_of_cell[va] == 1).sum() == 4
    assert np.array_equal(c.split(0.2, seed=4)[1], va) and not np.array_equal(c.split(0.2, seed=5)[1], va)
