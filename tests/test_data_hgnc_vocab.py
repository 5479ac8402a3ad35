"""HGNC harmonisation on real HGNC rows, and the gene vocabulary."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tfmkit.data.hgnc import harmonize_genes, load_hgnc, map_symbols
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError


def _adata(names, gene_ids=None, n=3):
    var = pd.DataFrame(index=pd.Index(names))
    if gene_ids is not None:
        var["gene_ids"] = gene_ids
    X = np.arange(1, n * len(names) + 1, dtype=np.float32).reshape(n, len(names))
    return ad.AnnData(X=X, var=var)


def test_hgnc_table_contents():
    t = load_hgnc()
    assert len(t.approved) > 40000
    assert t.ensembl["ENSG00000198851"] == "CD3E"  # HGNC: CD3E <-> ENSG00000198851
    assert t.previous["KIAA0101"] == ("PCLAF",)
    assert set(t.alias["CD16"]) == {"FCGR3A", "FCGR3B"}
    assert "CD3E" in t.protein_coding()
    assert load_hgnc() is t  # cached


def test_map_symbols_priorities():
    names = ["CD3E", "ENSG00000198851.7", "KIAA0101", "NKG2D", "CD16", "TAZ", "notagene", "AL627309.1"]
    ens = [None, None, None, None, None, None, None, "ENSG00000121410"]  # A1BG's Ensembl id
    new, status = map_symbols(names, ens)
    assert list(new) == ["CD3E", "CD3E", "PCLAF", "KLRK1", "CD16", "TAFAZZIN", "notagene", "A1BG"]
    # CD16 is an alias of two genes -> ambiguous -> unmapped; TAZ is a previous symbol of
    # TAFAZZIN (and an alias of WWTR1): previous wins.
    assert list(status) == ["approved", "ensembl", "previous", "alias", "unmapped", "previous",
                            "unmapped", "ensembl"]


def test_harmonize_genes_reports_and_drops_duplicates(capsys):
    a = _adata(["CD3E", "KIAA0101", "PCLAF", "NKG2D", "weird1", "CD3E"],
               gene_ids=["ENSG00000198851", "x", "y", "z", "w", "v"])
    X0 = a.X.copy()
    rep = harmonize_genes(a, source="pbmc.h5ad")
    # PCLAF is kept over KIAA0101 (its previous symbol) because it already has the approved name
    assert list(a.var_names) == ["CD3E", "PCLAF", "KLRK1", "weird1"]
    assert list(a.var["original_symbol"]) == ["CD3E", "PCLAF", "NKG2D", "weird1"]
    assert list(a.var["hgnc_status"]) == ["approved", "approved", "alias", "unmapped"]
    # first of two equally named columns kept; values never summed
    np.testing.assert_array_equal(a.X, X0[:, [0, 2, 3, 4]])
    assert rep.counts == {"approved": 2, "ensembl": 0, "previous": 0, "alias": 1, "unmapped": 1,
                          "duplicate_dropped": 2}
    assert rep.unmapped_examples == ["weird1"]
    assert rep.duplicate_examples == ["KIAA0101->PCLAF", "CD3E->CD3E"]
    assert a.uns["tfmkit_gene_report"]["counts"]["duplicate_dropped"] == 2
    assert "6 genes -> 4 kept" in rep.summary() and "\n" not in rep.summary()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: pbmc.h5ad: 2 of 6 gene columns")
    assert "KIAA0101 (kept PCLAF as PCLAF)" in err and "not summed" in err


def test_harmonize_keeps_approved_column_over_renamed_zero_column(capsys):
    """Issue 11 #5: SEPT7 (all zeros, first) and SEPTIN7 (the counts) -> SEPTIN7's counts kept."""
    a = _adata(["SEPT7", "CD3E", "SEPTIN7"])
    a.X[:, 0] = 0
    counts = a.X[:, 2].copy()
    harmonize_genes(a, source="marrow.h5ad")
    assert list(a.var_names) == ["CD3E", "SEPTIN7"]
    np.testing.assert_array_equal(a.X[:, 1], counts)
    assert list(a.var["original_symbol"]) == ["CD3E", "SEPTIN7"]
    err = capsys.readouterr().err
    assert "marrow.h5ad: 1 of 3 gene columns" in err and "SEPT7 (kept SEPTIN7 as SEPTIN7)" in err


def test_harmonize_quiet_without_collisions_and_strips_ensembl_versions(capsys):
    # versioned Ensembl ids in var_names and in a gene_id column (GENCODE _PAR_Y suffix too)
    a = _adata(["ENSG00000198851.7", "ENSG00000121410.12_PAR_Y", "x1"],
               gene_ids=None)
    a.var["gene_id"] = ["ENSG00000198851.7", "ENSG00000121410.12", "ENSG00000134460.15"]
    rep = harmonize_genes(a)
    assert list(a.var_names) == ["CD3E", "A1BG", "IL2RA"]
    assert rep.counts["ensembl"] == 3 and capsys.readouterr().err == ""


def test_harmonize_copy_leaves_input():
    a = _adata(["KIAA0101", "foo"])
    rep = harmonize_genes(a, copy=True)
    assert list(a.var_names) == ["KIAA0101", "foo"] and "hgnc_status" not in a.var
    assert list(rep.adata.var_names) == ["PCLAF", "foo"]


def test_vocab_basics_and_roundtrip(tmp_path):
    v = GeneVocab(["B", "A", "C"])
    assert (v.PAD, v.CLS, v.MASK, v.PERT, v.N_SPECIAL) == (0, 1, 2, 3, 4)
    assert v.SPECIAL_TOKENS == ("<pad>", "<cls>", "<mask>", "<pert>")
    assert len(v) == 3 and v.n_genes == 3 and v.n_tokens == 7
    np.testing.assert_array_equal(v.gene_index(["C", "zz", "B"]), [2, -1, 0])
    np.testing.assert_array_equal(v.token_ids(["A", "C"]), [5, 6])
    with pytest.raises(TfmkitError, match="not in the vocabulary"):
        v.token_ids(["A", "zz"])
    np.testing.assert_array_equal(v.token_ids(["A", "zz"], allow_unknown=True), [5, -1])
    v.save(tmp_path / "vocab.json")
    assert GeneVocab.load(tmp_path / "vocab.json") == v
    assert GeneVocab.from_dict(v.to_dict()) == v
    assert GeneVocab(["A", "B", "C"]) != v
    with pytest.raises(TfmkitError, match="duplicate"):
        GeneVocab(["A", "A"])
    with pytest.raises(TfmkitError, match="missing.json does not exist"):
        GeneVocab.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TfmkitError, match="not valid JSON"):
        GeneVocab.load(tmp_path / "bad.json")


def test_vocab_from_adatas_min_cells():
    a = ad.AnnData(sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 2]], dtype=np.float32)),
                   var=pd.DataFrame(index=["G1", "G2", "G3"]))
    b = ad.AnnData(np.array([[0, 5], [0, 1]], dtype=np.float32), var=pd.DataFrame(index=["G3", "G4"]))
    # nonzero cells: G1 2, G2 0, G3 1+0 = 1, G4 2
    assert GeneVocab.from_adatas({"a": a, "b": b}).genes == ["G1", "G3", "G4"]
    assert GeneVocab.from_adatas([a, b], min_cells=2).genes == ["G1", "G4"]
    with pytest.raises(TfmkitError, match="no gene is nonzero in >= 10 cells; lower min_cells"):
        GeneVocab.from_adatas([a], min_cells=10)
