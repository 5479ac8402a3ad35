"""Bundled real datasets: shapes, raw integer counts, agreement with the source files."""

from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tfmkit.datasets import DATASETS, load_balf, load_corpus, load_pbmc68k, load_wu2020
from tfmkit.datasets.bundled import pack_csr, unpack_csr
from tfmkit.errors import TfmkitError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared() -> Path:
    """The source files of the bundled data; fail loudly (not skip) when they are absent."""
    if not SHARED.exists():
        pytest.fail(f"{SHARED} is missing: the provenance tests compare the bundled data with its "
                    "source files; run the suite from a checkout with ../shared beside it")
    return SHARED


@pytest.fixture(scope="module")
def balf():
    return load_balf()


def _assert_raw_counts(a):
    assert isinstance(a.X, sp.csr_matrix) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.data, np.rint(a.X.data))
    assert a.X.data.min() > 0
    assert (np.asarray((a.X > 0).sum(0)).ravel() >= 1).all()  # only detected genes
    assert a.var_names.is_unique
    assert {"original_symbol", "hgnc_status"} <= set(a.var.columns)


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    X = sp.random(50, 300, density=0.05, format="csr", random_state=1)
    X.data = rng.integers(1, 70000, X.nnz).astype(np.float64)
    X = sp.csr_matrix(X.toarray() * (np.arange(50) != 3)[:, None])  # an empty row
    arrs = pack_csr(X)
    assert arrs["delta"].dtype == np.uint16 if arrs["delta"].max() > 255 else np.uint8
    assert arrs["data"].dtype == np.uint32  # values up to 70000
    np.testing.assert_array_equal(unpack_csr(arrs).toarray(), X.toarray())
    with pytest.raises(ValueError):
        pack_csr(sp.csr_matrix(np.array([[0.5]])))


def test_package_data_small():
    files = resources.files("tfmkit.datasets").joinpath("files")
    total = sum(f.stat().st_size for f in Path(str(files)).iterdir())
    assert total < 25e6


def test_balf(balf):
    assert balf.shape[0] == 10706
    assert balf.obs["patient"].value_counts().to_dict() == {"C146": 4111, "C144": 3716, "C149": 2879}
    assert (balf.obs["dataset"] == "liao2020_balf").all()
    _assert_raw_counts(balf)
    human = balf.var_names != "nCoV"  # the SARS-CoV-2 feature of the GRCh38_nCoV reference
    assert balf.var.loc[human, "gene_ids"].str.startswith("ENSG").all()
    assert balf[:, "nCoV"].X.sum() > 0
    assert balf.obs["cell_type_derived_is_derived"].all()
    types = set(balf.obs["cell_type_derived"])
    assert {"macrophage", "T cell"} <= types
    # macrophage markers are higher in derived macrophages than in derived T cells
    cd68 = balf[:, "CD68"].X.toarray().ravel()
    ct = balf.obs["cell_type_derived"].to_numpy()
    assert cd68[ct == "macrophage"].mean() > 5 * cd68[ct == "T cell"].mean()
    qc = balf.obs
    ok = (qc["n_genes"] >= 200) & (qc["n_genes"] <= 6000) & (qc["total_counts"] >= 1000) & (qc["pct_counts_mt"] < 10)
    np.testing.assert_array_equal(qc["qc_pass"].to_numpy(bool), ok.to_numpy())
    np.testing.assert_array_equal(qc["n_genes"], np.asarray((balf.X > 0).sum(1)).ravel())
    assert set(balf.obs.loc[~ok, "cell_type_derived"]) == {"low_quality"}
    assert "low_quality" not in set(balf.obs.loc[ok, "cell_type_derived"])
    sub = load_balf(patients=["C149"])
    assert sub.n_obs == 2879
    assert load_balf(qc=True).n_obs == int(ok.sum())
    with pytest.raises(TfmkitError, match="unknown BALF patient"):
        load_balf(patients=["C999"])


def test_balf_matches_source_file():
    import scanpy as sc

    src = sc.read_10x_h5(_shared() / "liao2020_balf" / "GSM4475052_C149_filtered_feature_bc_matrix.h5")
    ours = load_balf(patients=["C149"])
    col = {g: i for i, g in enumerate(src.var["gene_ids"])}
    cols = [col[g] for g in ours.var["gene_ids"]]
    assert (ours.X != src.X[:, cols]).nnz == 0
    # dropped source genes are all-zero or duplicates of kept symbols
    dropped = np.setdiff1d(np.arange(src.n_vars), cols)
    assert src.X[:, dropped].nnz < 0.001 * src.X.nnz


def test_wu2020():
    a = load_wu2020()
    assert a.n_obs == 200
    _assert_raw_counts(a)
    assert a.obs["cluster_orig"].nunique() == 16
    assert {"cluster_orig", "patient", "source", "batch", "dataset"} <= set(a.obs.columns)
    assert not any(c.startswith("IR_") for c in a.obs.columns)


def test_wu2020_matches_source():
    src = ad.read_h5ad(_shared() / "wu2020" / "wu2020_200_v0_11.h5ad")
    ours = load_wu2020()
    idx = src.var_names.get_indexer(ours.var["original_symbol"])
    assert (idx >= 0).all()
    assert (ours.X != src.X[:, idx]).nnz == 0
    assert list(ours.obs["cluster_orig"]) == list(src.obs["cluster_orig"].astype(str))


def test_pbmc68k_counts_reproduce_raw():
    import scanpy as sc

    a = load_pbmc68k()
    _assert_raw_counts(a)
    assert a.shape == (700, 765) and a.obs["bulk_labels"].nunique() == 10
    ref = sc.datasets.pbmc68k_reduced()
    assert list(a.obs_names) == list(ref.obs_names)
    n = a.obs["n_counts"].to_numpy(np.float64)
    ours = np.log1p(a.X.toarray() * (1e4 / n)[:, None])
    np.testing.assert_allclose(ours, ref.raw.X.toarray(), atol=1e-3)


def test_load_corpus_and_registry():
    from tfmkit.data.corpus import Corpus

    parts = load_corpus()
    assert list(parts) == ["balf_C144", "balf_C146", "balf_C149"]
    assert [p.n_obs for p in parts.values()] == [3716, 4111, 2879]
    c = Corpus.from_adatas(parts)
    assert c.n_cells == 10706 and not c.gene_reports  # already harmonised: not redone
    assert set(DATASETS) == {"balf", "wu2020", "pbmc68k"}
    assert all(callable(f) and isinstance(d, str) for f, d in DATASETS.values())
    with pytest.raises(TfmkitError, match="unknown bundled dataset"):
        load_corpus(["nope"])
