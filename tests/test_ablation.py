"""Ablation package (grid / evaluate / run / table): statistics vs scipy and hand formulas, grid
parsing, tables, and a tiny end-to-end ablation on the bundled data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfmkit import ablation as A
from tfmkit.errors import TfmkitError


# ---------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("x1,n1,x2,n2", [(30, 100, 45, 100), (10, 50, 12, 80), (190, 193, 150, 193)])
def test_ztest_matches_pooled_formula(x1, n1, x2, n2):
    p = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    assert A.two_proportion_ztest(x1, n1, x2, n2) == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)


def test_ztest_known_value_and_edges():
    # 50/100 vs 60/100: pooled p = .55, z = -0.1 / sqrt(.55*.45*.02) = -1.4213 -> p = 0.1552
    assert A.two_proportion_ztest(50, 100, 60, 100) == pytest.approx(0.15523, abs=1e-4)
    assert A.two_proportion_ztest(0, 10, 0, 20) == 1.0      # identical (degenerate variance)
    assert A.two_proportion_ztest(10, 10, 20, 20) == 1.0
    assert A.two_proportion_ztest(5, 10, 10, 20) == 1.0
    with pytest.raises(TfmkitError, match=r"z-test needs 0 <= x <= n and n > 0, got 11/10"):
        A.two_proportion_ztest(11, 10, 1, 10)
    with pytest.raises(TfmkitError, match=r"z-test needs 0 <= x <= n and n > 0, got 0/0"):
        A.two_proportion_ztest(0, 0, 1, 10)


def test_welch_matches_scipy_and_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5), rng.normal(1, 2, 7)
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 7
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 6)
    assert A.welch_ttest(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)
    assert A.welch_ttest(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(A.welch_ttest([1.0], [1.0, 2.0]))  # one seed: untestable
    assert A.welch_ttest([2.0, 2.0], [2.0, 2.0]) == 1.0
    assert math.isnan(A.welch_ttest([1.0, 1.0], [2.0, 2.0]))


def test_bh_matches_scipy_and_known_case():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, 0.5])
    assert np.allclose(A.benjamini_hochberg(p), stats.false_discovery_control(p))
    # all five at their own rank bound -> every adjusted value is 0.05
    assert np.allclose(A.benjamini_hochberg([0.01, 0.02, 0.03, 0.04, 0.05]), 0.05)
    out = A.benjamini_hochberg([0.01, np.nan, 0.04])  # NaN is not a test
    assert math.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.04])


# ---------------------------------------------------------------------------- grids
@pytest.mark.parametrize("name", ["txfm_table5", "encodings", "smoke"])
def test_shipped_grids_build_valid_configs(name, tmp_path):
    g = A.load_grid(name)
    assert g.default.name == g.cells()[0].name
    for cell in g.cells():
        cfg = A.cell_config(g, cell, g.seeds[0], tables_dir=tmp_path)
        assert cfg.train.seed == g.seeds[0]
        if cfg.model.gene_encoder == "pretrained":
            assert cfg.model.gene_encoder_kwargs["table_path"].startswith(str(tmp_path.resolve()))


def test_table5_grid_contents():
    g = A.load_grid("txfm_table5")
    assert set(g.groups) == {"loss", "activation", "unmasked_K", "masking_tau", "decoder"}
    nb = dict(g.groups["loss"])["Neg. Bin."]
    cfg = A.cell_config(g, nb, 0, ["train.steps=7"])
    assert (cfg.train.objective, cfg.model.activation, cfg.train.steps) == ("nb_nll", "identity", 7)
    assert dict(g.groups["loss"])["Poisson"] is g.default       # alias of the default row
    assert len(A.load_grid("encodings").cells()) == 8            # 2 gene x 4 expression


def test_select_filters():
    g = A.load_grid("txfm_table5")
    s = g.select(["loss", "activation"], cells=["MSE", "clamped ReLU"])
    assert [c.name for c in s.cells()] == ["default", "MSE", "clamped ReLU"]
    assert [c.name for c in g.select(max_cells=2).cells()] == ["default", "MSE", "SmoothL1"]
    with pytest.raises(TfmkitError, match="unknown ablation group"):
        g.select(["nope"])
    with pytest.raises(TfmkitError, match="unknown cell"):
        g.select(cells=["nope"])


@pytest.mark.parametrize("text,match", [
    ("base: txfm_tiny\n", "groups"),
    ("groups: {a: [{name: x, overrides: [notanoverride]}]}\n", "overrides"),
    ("groups: {a: [{overrides: []}]}\n", "name"),
    ("seeds: [a]\ngroups: {a: [{name: x}]}\n", "seeds"),
    ("groups: {a: [{name: x}]}\nfoo: 1\n", "unknown key"),
    ("groups: [\n", "cannot parse"),
])
def test_bad_grids(tmp_path, text, match):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    with pytest.raises(TfmkitError, match=match):
        A.load_grid(p)
    with pytest.raises(TfmkitError, match="not found"):
        A.load_grid(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------- aggregation
def _grid_ab():
    return A.Grid("txfm_tiny", [], A.Cell("def"), {"g": [("ref", A.Cell("def")), ("B", A.Cell("B", ["train.objective=mse"]))]},
                  [0, 1, 2], {}, {})


def test_compare_to_default_constructed():
    rows = []
    acc = {"def": [0.50, 0.52, 0.48], "B": [0.70, 0.72, 0.68]}
    f1 = {"def": [0.30, 0.31, 0.29], "B": [0.30, 0.32, 0.28]}
    for e in ("def", "B"):
        for s in range(3):
            rows.append({"embedding": e, "task": "knn_x", "metric": "accuracy", "value": acc[e][s], "n": 100, "seed": s})
            rows.append({"embedding": e, "task": "knn_x", "metric": "macro_f1", "value": f1[e][s], "n": 100, "seed": s})
    res = A.compare_to_default(pd.DataFrame(rows), _grid_ab())
    b_acc = res[(res.embedding == "B") & (res.metric == "accuracy")].iloc[0]
    assert b_acc.test == "z" and b_acc.n == 300
    assert b_acc.p_value == pytest.approx(A.two_proportion_ztest(210, 300, 150, 300))
    assert b_acc.significant and b_acc.group == "g"
    b_f1 = res[(res.embedding == "B") & (res.metric == "macro_f1")].iloc[0]
    assert b_f1.p_value == pytest.approx(stats.ttest_ind(f1["B"], f1["def"], equal_var=False).pvalue)
    assert not b_f1.significant
    assert b_f1["std"] == pytest.approx(np.std(f1["B"], ddof=1))
    # one test per family -> BH leaves p unchanged
    assert b_acc.p_adj == pytest.approx(b_acc.p_value)
    md = A.format_ablation_table(res, _grid_ab())
    assert "| ref (default) |" in md and "**0.700 ± 0.020***" in md


# ---------------------------------------------------------------------------- end to end
def test_smoke_ablation_end_to_end(tmp_path):
    """2 cells x 1 seed of a width-32 model on the bundled BALF corpus (< 60 s)."""
    g = A.load_grid("smoke")
    res = A.run_ablation(g, tmp_path, progress=False)
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.embedding) == {"default", "MSE"}
    assert {"group", "embedding", "task", "metric", "value", "std", "p_adj"} <= set(df.columns)
    acc = df[(df.embedding == "MSE") & (df.metric == "accuracy")].iloc[0]
    ps = pd.read_csv(tmp_path / "per_seed.csv").set_index(["embedding", "metric"])
    x = {e: (int(round(ps.loc[(e, "accuracy"), "value"] * ps.loc[(e, "accuracy"), "n"])),
             int(ps.loc[(e, "accuracy"), "n"])) for e in ("MSE", "default")}
    n_cells = A.load_eval_sets({"celltype": ["wu2020"]})["wu2020"][0].n_obs
    assert acc.test == "z" and acc.n == x["MSE"][1] == n_cells  # every cell scored once
    assert acc.p_value == pytest.approx(A.two_proportion_ztest(*x["MSE"], *x["default"]))
    assert set(df[df.embedding == "MSE"].task) == {"knn_wu2020", "recon_wu2020_mask90"}
    assert "### loss" in res["table"] and (tmp_path / "per_seed.csv").exists()
    weights = tmp_path / "runs" / "MSE" / "seed0" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with pytest.raises(TfmkitError, match="overwrite"):
        A.run_ablation(g, tmp_path, progress=False)
    A.run_ablation(g, tmp_path, overwrite=True, progress=False)  # reuses models and evaluations
    assert weights.stat().st_mtime_ns == stamp
    with pytest.raises(TfmkitError, match="another config"):
        A.run_ablation(g, tmp_path, extra_overrides=["train.lr=0.01"], overwrite=True, progress=False)


def test_cli_ablate_help_and_error():
    from typer.testing import CliRunner

    from tfmkit.cli import app

    r = CliRunner().invoke(app, ["ablate", "--help"])
    assert r.exit_code == 0 and "--max-cells" in r.output
    r = CliRunner().invoke(app, ["ablate", "--grid", "nope"])
    assert r.exit_code == 2 and "ablation grid 'nope' not found" in r.output
