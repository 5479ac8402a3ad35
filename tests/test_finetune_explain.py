"""Integrated-gradients attributions (issue 9 item 5): mechanics on a separable toy set."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from tfmkit.cli import app
from tfmkit.errors import TfmkitError
from tfmkit.finetune import finetune_celltype
from tfmkit.finetune.explain import explain, top_genes

from conftest import GENES, pretrain_parent
from test_finetune_celltype import TINY, separable


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    toy = separable()
    cfg = [o for o in TINY if "expressed_only" not in o] + ["data.expressed_only=false", "data.zero_fraction=0"]  # all 24 genes
    parent = pretrain_parent(d / "parent", toy, cfg)
    clf = finetune_celltype(parent, toy, "cell_type", d / "ft", mode="full", steps=60, lr=1e-2, batch_size=16,
                            val_every=10, patience=0)
    toy.write_h5ad(d / "toy.h5ad")
    return d, toy, parent, clf


def test_classifier_attributions_rank_each_types_markers_first(models):
    _, toy, _, clf = models
    r = explain(toy, clf, n_cells_per_class=12, n_views=1, n_steps=64)
    att = r["attributions"]
    assert list(att.columns) == ["type0", "type1", "type2"] and r["n_cells"] == {"type0": 12, "type1": 12, "type2": 12}
    assert r["score"] == "class logit"
    assert r["baseline"] == "zero"
    # completeness: sum of attributions = F(x) - F(0) up to the quadrature error
    assert r["delta"] < 0.05 * r["mean_abs_score_change"]
    top = top_genes(att, 6)
    for t in range(3):
        genes = set(top[top["class"] == f"type{t}"]["gene"])
        assert len(genes & set(GENES[6 * t:6 * t + 6])) >= 5, (t, genes)
    # with the zero baseline a gene a class's cells do not express gets no attribution there
    assert (att.loc[GENES[6:18], "type0"] == 0).all()
    # markers of type t support type t more than they support the other types
    for t in range(3):
        m = GENES[6 * t:6 * t + 6]
        assert att.loc[m, f"type{t}"].mean() > att.loc[m].drop(columns=f"type{t}").to_numpy().mean()


def test_embedding_attributions_need_labels(models):
    _, toy, parent, _ = models
    with pytest.raises(TfmkitError, match="not a cell-type classifier: pass --label-key"):
        explain(toy, parent)
    r = explain(toy, parent, label_key="cell_type", n_cells_per_class=8, n_views=1, n_steps=64, baseline="mean")
    assert r["score"].startswith("embedding projection") and r["attributions"].shape == (24, 3)
    assert r["baseline"] == "mean"
    assert r["delta"] < 0.05 * r["mean_abs_score_change"]


def test_cli_explain_writes_top_genes_and_plot(models):
    d, _, _, clf = models
    runner = CliRunner()
    args = ["explain", "--model", str(clf), "--input", str(d / "toy.h5ad"), "--out", str(d / "res"),
            "--cells-per-class", "6", "--n-views", "1", "--n-steps", "8", "--n-top", "5", "--classes", "type0,type2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    top = pd.read_csv(d / "res" / "top_genes.csv")
    assert list(top.columns) == ["class", "rank", "gene", "attribution"] and len(top) == 10
    assert list(dict.fromkeys(top["class"])) == ["type0", "type2"]
    assert (d / "res" / "top_genes.png").stat().st_size > 1000
    assert pd.read_csv(d / "res" / "attributions.csv", index_col=0).shape == (24, 2)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "top_genes.csv exists; pass --overwrite" in r.output
    r = runner.invoke(app, args[:-1] + ["typeX", "--out", str(d / "res3")])
    assert r.exit_code == 2 and "class(es) ['typeX'] are not classes of obs['cell_type']" in r.output
    assert not (d / "res3").exists()
