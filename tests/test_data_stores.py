"""On-disk count stores (backed .h5ad, sharded `tfmkit prepare` store, TileDB-SOMA) against the
in-memory Corpus built from the same data: same vocabulary, counts, library sizes, observable
genes, nonzero counts and split; plus sources (directories, manifests, memory budget, cache)."""

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import typer
from conftest import GENES, make_counts
from typer.testing import CliRunner

from tfmkit.cli.prepare import prepare
from tfmkit.data import sources
from tfmkit.data.corpus import Corpus
from tfmkit.data.sources import open_corpus, resolve_paths, scan_file
from tfmkit.data.store import CountStore
from tfmkit.data.stores.backed_h5ad import H5adStore
from tfmkit.data.stores.sharded import ShardedStore
from tfmkit.data.stores.soma import SomaStore
from tfmkit.data.stores.writer import write_store
from tfmkit.errors import TfmkitError


def _write(tmp_path, adatas):
    paths = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, a in adatas.items():
        p = tmp_path / f"{name}.h5ad"
        a.write_h5ad(p)
        paths.append(p)
    return paths


def _same_as_corpus(store, ref: Corpus):
    assert isinstance(store, CountStore)
    assert store.vocab == ref.vocab and store.names == ref.names and store.n_cells == ref.n_cells
    for o, r in zip(store.observable, ref.observable):
        np.testing.assert_array_equal(o, r)
    np.testing.assert_allclose(store.library_sizes, ref.library_sizes)
    np.testing.assert_array_equal(store.dataset_of_cell, ref.dataset_of_cell)
    np.testing.assert_array_equal(store.nonzero_cells(), ref.nonzero_cells())
    cells = np.random.default_rng(0).permutation(ref.n_cells)
    for chunk in np.array_split(cells, 7):  # random cells across blocks, shards and datasets
        np.testing.assert_array_equal(store.dense_counts(chunk), ref.dense_counts(chunk))
    ds = np.arange(len(ref.names))
    assert (store.observable_mask(ds) == ref.observable_mask(ds)).all()
    for a, b in zip(store.split(0.2, seed=3), ref.split(0.2, seed=3)):
        np.testing.assert_array_equal(a, b)
    if hasattr(store, "iter_csr"):  # sequential pass, rows as the in-memory store keeps them
        for d in range(len(ref.names)):
            X = sp.vstack([x for _, x in store.iter_csr(d)]).tocsr()
            np.testing.assert_array_equal(X.indptr, ref.counts[d].indptr)
            np.testing.assert_array_equal(X.indices, ref.counts[d].indices)
            np.testing.assert_array_equal(X.data, ref.counts[d].data)
    assert list(store.obs.index) == list(ref.obs.index)
    assert list(store.obs["dataset"]) == list(ref.obs["dataset"])


def test_backed_h5ad_store_equals_in_memory(tmp_path, two_panels):
    paths = _write(tmp_path, two_panels)
    store = open_corpus(paths, min_cells=1, max_in_memory_gb=0, cache_dir=tmp_path / "cache", block_cells=16)
    assert isinstance(store, H5adStore)
    _same_as_corpus(store, Corpus.from_adatas(two_panels, min_cells=1))
    clone = pickle.loads(pickle.dumps(store))  # loader workers get a picklable copy
    np.testing.assert_array_equal(clone.dense_counts([0, 70]), store.dense_counts([0, 70]))
    # gene statistics of the streaming pass vs a direct computation
    X = two_panels["panel_a"].X.toarray()
    lognorm = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    gs = store.gene_stats.loc["CD3E"]  # measured by panel_a only
    assert gs["nonzero_cells"] == (X[:, 0] > 0).sum()
    assert gs["mean"] == pytest.approx(lognorm[:, 0].mean()) and gs["var"] == pytest.approx(lognorm[:, 0].var())


def test_in_memory_when_under_budget_and_dense_x(tmp_path, two_panels):
    paths = _write(tmp_path, two_panels)
    assert isinstance(open_corpus(paths, min_cells=1), Corpus)
    dense = {k: ad.AnnData(a.X.toarray(), obs=a.obs, var=a.var) for k, a in two_panels.items()}
    store = open_corpus(_write(tmp_path / "d", dense),
                        min_cells=1, max_in_memory_gb=0, cache_dir=tmp_path / "c")
    _same_as_corpus(store, Corpus.from_adatas(two_panels, min_cells=1))


def test_sharded_store_equals_in_memory(tmp_path, two_panels):
    paths = _write(tmp_path, two_panels)
    out = write_store(paths, tmp_path / "store", min_cells=1, shard_cells=20, cache_dir=tmp_path / "c")
    store = ShardedStore(out, block_cells=16)  # blocks of 16 cross shards of 20
    assert len(store.shards) == 4 + 3
    _same_as_corpus(store, Corpus.from_adatas(two_panels, min_cells=1))
    assert isinstance(open_corpus([out]), ShardedStore)
    # re-aligned to another vocabulary (a resumed run's): genes outside it disappear
    sub = Corpus.from_adatas({"x": make_counts(5, GENES[5:15])}, min_cells=1).vocab
    r = ShardedStore(out, vocab=sub)
    ref = Corpus.from_adatas(two_panels, vocab=sub, allow_low_coverage=True)
    np.testing.assert_array_equal(r.dense_counts(np.arange(112)), ref.dense_counts(np.arange(112)))
    np.testing.assert_array_equal(r.nonzero_cells(), ref.nonzero_cells())


def test_prepare_cli_refuses_existing_output_and_leaves_nothing_on_failure(tmp_path, two_panels):
    paths = _write(tmp_path, two_panels)
    app = typer.Typer()
    app.command()(prepare)
    app.command("x")(lambda: None)
    res = CliRunner().invoke(app, ["prepare", *map(str, paths), "--out", str(tmp_path / "s"), "--min-cells", "1"])
    assert res.exit_code == 0, res.output
    assert "112 cells, 2 datasets" in res.output
    with pytest.raises(TfmkitError, match="already exists"):
        write_store(paths, tmp_path / "s")
    bad = tmp_path / "bad.h5ad"
    ad.AnnData(sp.csr_matrix(np.full((4, 3), 0.5, np.float32)), var=pd.DataFrame(index=GENES[:3])).write_h5ad(bad)
    with pytest.raises(TfmkitError, match="non-integer"):
        write_store([paths[0], bad], tmp_path / "s2", cache_dir=tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir() if "s2" in p.name) == []


def test_sources_directory_manifests_and_names(tmp_path, two_panels):
    _write(tmp_path / "d", two_panels)
    (tmp_path / "d" / "notes.txt").write_text("not data")
    assert [n for n, _ in resolve_paths([tmp_path / "d"])] == ["panel_a", "panel_b"]
    (tmp_path / "m.txt").write_text("# corpus\nd/panel_b.h5ad\n\nd/panel_a.h5ad\n")
    assert [n for n, _ in resolve_paths([tmp_path / "m.txt"])] == ["panel_b", "panel_a"]
    (tmp_path / "m.csv").write_text("path,name\nd/panel_a.h5ad,A\nd/panel_b.h5ad,\n")
    assert [n for n, _ in resolve_paths([tmp_path / "m.csv"])] == ["A", "panel_b"]
    with pytest.raises(TfmkitError, match="listed twice"):
        resolve_paths([tmp_path / "d", tmp_path / "m.txt"])
    (tmp_path / "bad.txt").write_text("d/missing.h5ad\n")
    with pytest.raises(TfmkitError, match="missing.h5ad does not exist"):
        resolve_paths([tmp_path / "bad.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfmkitError, match="holds no .h5ad"):
        resolve_paths([tmp_path / "empty"])
    store = open_corpus([tmp_path / "d"], min_cells=1, max_in_memory_gb=0, cache_dir=tmp_path / "c")
    assert store.names == ["panel_a", "panel_b"] and store.n_cells == 112


def test_stats_cache_reused_until_the_file_changes(tmp_path, two_panels, monkeypatch):
    (path,) = _write(tmp_path, {"a": two_panels["panel_a"]})
    first = scan_file(path)
    assert (tmp_path / ".tfmkit_cache" / "a.h5ad.X.stats.npz").is_file()  # next to the data
    calls = []
    real = sources.scan_rows
    monkeypatch.setattr(sources, "scan_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = scan_file(path)
    assert calls == [] and np.array_equal(again.library_sizes, first.library_sizes)
    b = two_panels["panel_a"].copy()
    b.X = b.X * 2
    b.write_h5ad(path)
    changed = scan_file(path)
    assert calls == [1] and np.allclose(changed.library_sizes, 2 * first.library_sizes)


def test_backed_errors_are_one_line_and_actionable(tmp_path, two_panels):
    a = two_panels["panel_a"]
    csc = ad.AnnData(sp.csc_matrix(a.X), obs=a.obs, var=a.var)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(TfmkitError, match="stored CSC"):
        open_corpus([tmp_path / "csc.h5ad"], max_in_memory_gb=0)
    a.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(TfmkitError, match="layer 'counts' not found"):
        open_corpus([tmp_path / "a.h5ad"], layer="counts", max_in_memory_gb=0)
    mouse = ad.AnnData(a.X, var=pd.DataFrame(index=[g.capitalize() for g in a.var_names]))
    mouse.write_h5ad(tmp_path / "mouse.h5ad")
    with pytest.raises(TfmkitError, match="mouse"):
        open_corpus([tmp_path / "mouse.h5ad"], max_in_memory_gb=0, cache_dir=tmp_path / "c")


def test_soma_store_equals_in_memory(tmp_path):
    import tiledbsoma.io

    a, b = make_counts(40, GENES[:30], seed=1), make_counts(30, GENES[:30], seed=2)
    both = ad.concat({"d1": a, "d2": b}, label="dataset_id")
    both.obs["dataset_id"] = both.obs["dataset_id"].astype(str)
    uri = str(tmp_path / "exp")
    tiledbsoma.io.from_anndata(uri, both, measurement_name="RNA")
    store = SomaStore.open(uri, min_cells=1, observable="all", block_cells=16)
    ref = Corpus.from_adatas({"d1": a, "d2": b}, min_cells=1)
    assert store.names == ["d1", "d2"] and store.vocab == ref.vocab
    cells = np.random.default_rng(1).permutation(70)
    np.testing.assert_array_equal(store.dense_counts(cells), ref.dense_counts(cells))
    np.testing.assert_allclose(store.library_sizes, ref.library_sizes)
    np.testing.assert_array_equal(store.nonzero_cells(), ref.nonzero_cells())
    for x, y in zip(store.split(0.2, 0), ref.split(0.2, 0)):
        np.testing.assert_array_equal(x, y)
    assert list(store.obs["dataset"]) == ["d1"] * 40 + ["d2"] * 30
    # default for several datasets: a gene is measured where it is ever nonzero
    nz = SomaStore.open(uri, min_cells=1)
    for d, x in enumerate((a, b)):
        seen = np.asarray((x.X > 0).sum(0)).ravel() > 0
        np.testing.assert_array_equal(nz.observable[d], np.sort(ref.vocab.gene_index(x.var_names[seen])))
    assert isinstance(open_corpus([uri], min_cells=1), SomaStore)
    with pytest.raises(TfmkitError, match="layer 'nope' not found"):
        SomaStore.open(uri, layer="nope")


def test_soma_store_refuses_an_incomplete_experiment(tmp_path):
    """An experiment whose writing was interrupted (no ``ms`` collection: a 100k-cell
    ``from_anndata`` stopped midway) gets a one-line error, not a TypeError from tiledbsoma."""
    import tiledbsoma

    uri = str(tmp_path / "partial")
    tiledbsoma.Experiment.create(uri).close()
    with pytest.raises(TfmkitError, match="not a complete SOMA experiment .*write it again"):
        SomaStore.open(uri)
