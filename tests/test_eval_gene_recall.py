"""Gene-gene relationship recall: brute-force reference, constructed cases, shipped gene sets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import gene_recall as GR
from tfmkit.datasets import genesets


def test_known_pairs_brute_force():
    genes = list("ABCDEFG")
    sets = {"s1": ["A", "B", "C", "X"], "s2": ["C", "D"], "s3": ["B", "A"], "s4": ["Q"]}
    i, j = GR.known_pairs(genes, sets)
    ref = set()
    for members in sets.values():
        idx = sorted({genes.index(g) for g in members if g in genes})
        ref |= set(itertools.combinations(idx, 2))
    assert set(zip(i.tolist(), j.tolist())) == ref and len(i) == len(ref)


def test_recall_beyond_null_reference():
    rng = np.random.default_rng(0)
    null = rng.normal(size=1000)
    known = rng.normal(size=200) * 2
    lo, hi = np.quantile(null, [0.05, 0.95])
    ref = np.mean([(k <= lo) or (k >= hi) for k in known])
    assert GR.recall_beyond_null(known, null) == pytest.approx(ref)
    assert np.isnan(GR.recall_beyond_null([], null))


def test_pair_cosines_match_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity

    E = np.random.default_rng(1).normal(size=(20, 5))
    i, j = GR.random_pairs(20, 50, seed=0)
    assert (i != j).all()
    np.testing.assert_allclose(GR.pair_cosines(E, i, j), cosine_similarity(E)[i, j], atol=1e-12)


def test_constructed_recall_one_and_random_chance():
    rng = np.random.default_rng(2)
    G = 400
    genes = [f"G{k}" for k in range(G)]
    groups = {f"set{k}": genes[k * 4:(k + 1) * 4] for k in range(20)}
    E = rng.normal(size=(G, 16))
    for k in range(20):  # members of a set share (almost) one vector
        E[k * 4:(k + 1) * 4] = rng.normal(size=16) * 5 + rng.normal(size=(4, 16)) * 0.01
    rep = pd.DataFrame(E, index=genes)
    res = GR.gene_relationship_recall(rep, {"db": groups}, n_components=None)
    row = res.set_index("database").loc["db"]
    assert row["value"] == pytest.approx(1.0) and row["n_pairs"] == 20 * 6 and row["n_seeds"] == 3
    rand = pd.DataFrame(rng.normal(size=(G, 16)), index=genes)
    big = {f"s{k}": list(rng.choice(genes, 30, replace=False)) for k in range(30)}
    val = GR.gene_relationship_recall(rand, {"db": big}).set_index("database").loc["db", "value"]
    assert abs(val - 0.10) < 0.03
    assert set(res["database"]) == {"db", "combined"}


def test_postprocess_standardises_and_projects():
    E = np.random.default_rng(3).normal(size=(50, 10)) * np.arange(1, 11)
    Z = GR.postprocess(E, 4)
    assert Z.shape == (50, 4)
    np.testing.assert_allclose(GR.postprocess(E, None).std(0), 1.0)
    with pytest.raises(TfmkitError, match=r"contains NaN or infinite values"):
        GR.postprocess(np.full((5, 3), np.nan), 2)


def test_duplicated_genes_raise():
    rep = pd.DataFrame(np.random.default_rng(0).normal(size=(4, 3)), index=["A", "A", "B", "C"])
    with pytest.raises(TfmkitError, match=r"duplicated gene names"):
        GR.gene_relationship_recall(rep, {"db": {"s": ["A", "B"]}})


def test_shipped_gene_sets_load():
    corum = genesets.load_gene_sets("corum")
    assert len(corum) == 2916 and any("BCL6" in g for g in corum.values())
    hall = genesets.load_gene_sets("hallmark")
    assert len(hall) == 50 and "JUNB" in hall["HALLMARK_TNFA_SIGNALING_VIA_NFKB"]
    cp = genesets.load_gene_sets("canonical_pathways")
    assert len(cp) == 2796
    assert all(k.startswith("REACTOME_") for k in genesets.load_gene_sets("reactome"))
    dbs = genesets.load_databases(("hallmark",), max_size=100)
    assert all(2 <= len(v) <= 100 for v in dbs["hallmark"].values())
    with pytest.raises(TfmkitError, match=r"unknown gene-set database 'kegg'"):
        genesets.load_gene_sets("kegg")


def test_read_gmt_roundtrip(tmp_path):
    p = tmp_path / "x.gmt"
    p.write_text("S1\tdesc\tA\tB\t\nS2\tdesc\tC\n")
    assert genesets.read_gmt(p) == {"S1": ["A", "B"], "S2": ["C"]}
    with pytest.raises(TfmkitError, match=r"missing.gmt does not exist"):
        genesets.read_gmt(tmp_path / "missing.gmt")
