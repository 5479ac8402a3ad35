"""Preflight (`tfmkit doctor --input`): where the counts are, what X is, genes, coverage."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tfmkit.data.hgnc import load_hgnc
from tfmkit.data.vocab import GeneVocab
from tfmkit.preflight import classify_matrix, format_report, inspect_input


@pytest.fixture(scope="module")
def genes():
    return sorted(s for s in load_hgnc().protein_coding() if s == s.upper() and s.capitalize() != s)[:300]


def _counts(n=200, g=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.gamma(0.5, 2.0, size=(1, g)), size=(n, g)).astype(np.float32)


def _lognorm(C):
    return np.log1p(C / np.maximum(C.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)


def test_lognormalised_x_with_counts_layer_recommends_the_layer(genes):
    C = _counts()
    a = ad.AnnData(X=_lognorm(C), var=pd.DataFrame(index=genes))
    a.layers["counts"] = sp.csr_matrix(C)
    X0 = a.X.copy()
    r = inspect_input(a, source="pbmc.h5ad")
    assert not r.ok and r.flags == ["--layer counts"] and r.counts_layer == "counts"
    assert [(m.where, m.kind) for m in r.matrices] == [("X", "log1p"), ("layers['counts']", "counts")]
    assert r.problems == ["X holds log1p values, not raw counts; the raw counts are in layers['counts']"]
    text = format_report(r)
    assert text.splitlines()[0] == "pbmc.h5ad: 200 cells x 300 genes"
    assert text.splitlines()[-1] == "NOT usable as is: pass --layer counts"
    np.testing.assert_array_equal(a.X, X0)  # nothing modified
    assert set(a.layers) == {"counts"}


def test_counts_in_x_are_ok_with_model_coverage(genes, tmp_path):
    C = _counts()
    C[:3] = 0  # three empty cells
    a = ad.AnnData(X=sp.csr_matrix(C), var=pd.DataFrame(index=genes))
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    GeneVocab(genes[:250] + ["XIST_LIKE"]).save(tmp_path / "vocab.json")
    r = inspect_input(path, model_vocab=tmp_path)  # a model directory holding vocab.json
    assert r.ok and r.flags == [] and r.problems == []
    assert r.coverage.n_mapped == 250 and r.coverage.frac_vocab == pytest.approx(250 / 251)
    assert r.n_zero_cells == 3 and r.n_zero_genes == int((C.sum(0) == 0).sum())
    assert any("3 of 200 cells have no counts" in w for w in r.warnings)
    text = format_report(r)
    assert "model: mapped 250 of 300 input genes to the model vocabulary (99.6% of the vocabulary)" in text
    assert text.splitlines()[0] == "in.h5ad: 200 cells x 300 genes" and text.endswith("OK: usable as is.")
    assert r.memory_bytes > a.X.data.nbytes


def test_scaled_x_counts_in_raw(genes):
    C = _counts()
    raw = ad.AnnData(X=sp.csr_matrix(C), var=pd.DataFrame(index=genes))
    L = _lognorm(C)[:, :100]
    a = ad.AnnData(X=(L - L.mean(0)) / (L.std(0) + 1e-6), var=pd.DataFrame(index=genes[:100]))
    a.raw = raw
    r = inspect_input(a)
    assert [m.kind for m in r.matrices] == ["scaled", "counts"]
    assert r.flags == ["--layer raw"] and r.matrices[1].n_genes == 300
    assert r.n_hgnc_mapped == 300  # genes judged on .raw's var, the matrix that would be used


def test_no_counts_anywhere_and_mouse_genes_against_a_model(genes):
    C = _counts()
    mouse = [g.capitalize() for g in genes]
    a = ad.AnnData(X=C / C.sum(1, keepdims=True) * 1e4, var=pd.DataFrame(index=mouse))
    r = inspect_input(a, model_vocab=genes)
    assert r.matrices[0].kind == "normalised" and not r.counts_found and r.flags == []
    assert r.problems[0].startswith("no raw counts in the file (X normalised)")
    assert r.problems[1].startswith("only 0.0% of the model vocabulary is in the input; likely cause: "
                                    "mouse/rat-style symbols")
    assert r.likely_species == "mouse or rat (capitalised symbols)"
    assert format_report(r).endswith("NOT usable: 2 problem(s) above")


def test_gene_namespace_duplicates_and_ensembl_versions():
    t = load_hgnc()
    ens = {"CD3E": "ENSG00000198851", "A1BG": "ENSG00000121410"}
    names = [ens["CD3E"] + ".7", ens["A1BG"] + ".12", "SEPT7", "SEPTIN7", "SEPTIN7"]
    assert t.previous["SEPT7"] == ("SEPTIN7",)
    a = ad.AnnData(X=_counts(20, 5), var=pd.DataFrame(index=names))
    r = inspect_input(a)
    assert r.namespace == {"ensembl_version": 2, "symbol": 3}
    assert r.likely_species == "human" and r.n_hgnc_mapped == 5
    assert r.n_duplicate_names == 1 and r.n_hgnc_collisions == 1  # SEPT7 -> SEPTIN7
    assert "SEPT7->SEPTIN7" in r.duplicate_examples


def test_classify_matrix_kinds():
    C = _counts(100, 50)
    assert classify_matrix(sp.csr_matrix(C))[0] == "counts"
    assert classify_matrix(C / C.sum(1, keepdims=True) * 1e4) == (
        "normalised", "non-integer, every cell sums to 1e+04")
    assert classify_matrix(_lognorm(C))[0] == "log1p"
    kind, detail = classify_matrix(_lognorm(C)[:, :20])  # gene subset: rows no longer sum to 1e4
    assert kind == "log1p" and detail.endswith("log-transformed")
    assert classify_matrix(C * 37.5 + 0.25)[0] == "normalised"  # TPM-like, max > 30
    assert classify_matrix(_lognorm(C) - 1)[0] == "scaled"
    bad = C.copy()
    bad[0, 0] = np.nan
    assert classify_matrix(bad)[0] == "invalid"
    assert classify_matrix(np.zeros((3, 3)))[0] == "empty"
    assert classify_matrix(np.array([["a"]]))[0] == "non-numeric"
