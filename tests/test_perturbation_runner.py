"""AnnData runner, control parsing, Replogle layout and the `tfmkit benchmark perturbation` CLI."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tfmkit.cli import app
from tfmkit.datasets.simulate import simulate_perturbseq
from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.runner import (
    RESULT_COLUMNS,
    TASKS,
    benchmark_perturbation,
    control_mask,
    table2,
)

FAST = dict(n_null=1000, databases=("corum", "hallmark"))


@pytest.fixture(scope="module")
def sim():
    return simulate_perturbseq(n_perturbations=16, cells_per_perturbation=40, n_batches=3,
                               effect_size=2.0, seed=1)


@pytest.fixture(scope="module")
def results(sim):
    return benchmark_perturbation(sim, control_key="is_control", control_value=True,
                                  baselines=("hvg300", "pca10", "random_label_shuffle"),
                                  n_seeds=2, **FAST)


def test_long_table_and_aggregation(results):
    assert list(results.columns) == RESULT_COLUMNS
    assert results.attrs["simulated"] is True
    scores = results[(results.metric == "score") & (results.task != "avg")]
    # exactly one best post-processing per (embedding, task), and it has the max score
    for (_, _), grp in scores.groupby(["embedding", "task"]):
        assert grp.best.sum() == 1
        assert grp.loc[grp.best, "value"].iloc[0] == grp.value.max()
    # task score = mean of its metrics (seed-averaged); avg = mean of best task scores
    lin = results[(results.embedding == "hvg300") & (results.task == "lin") & (results.postprocessing == "center")]
    assert lin[lin.metric == "score"].value.iloc[0] == pytest.approx(lin[lin.metric.isin(["top1", "top5"])].value.mean())
    t2 = table2(results)
    assert list(t2.columns) == [*TASKS, "avg"]
    assert t2.loc["pca10", "avg"] == pytest.approx(t2.loc["pca10", list(TASKS)].mean())
    assert (results[results.task == "lin"].n_seeds.max()) == 2


def test_baselines_beat_random_label_shuffle(results):
    t2 = table2(results)
    shuffle = t2.loc["random_label_shuffle"]
    assert all(t2.loc["hvg300", t] > shuffle[t] for t in ("lin", "knn", "p.cst", "bmdb", "inv"))
    # 10 PCs separate perturbations but are too noisy per cell for the p < 0.01 consistency test
    assert all(t2.loc["pca10", t] > shuffle[t] for t in ("lin", "knn", "bmdb", "inv"))
    # the shuffle sits at chance: 16 classes -> top-1 6.25%, top-5 31%; no consistent perturbation
    assert t2.loc["random_label_shuffle", "p.cst"] <= 6.25
    assert t2.loc["random_label_shuffle", "lin"] < 30


def test_control_mask_bool_and_string():
    obs = pd.DataFrame({"flag": [True, False, True], "gene": ["non-targeting", "A", "B"],
                        "sflag": ["True", "False", "True"]})
    np.testing.assert_array_equal(control_mask(obs, "flag"), [True, False, True])
    np.testing.assert_array_equal(control_mask(obs, "flag", "true"), [True, False, True])
    np.testing.assert_array_equal(control_mask(obs, "flag", "False"), [False, True, False])
    np.testing.assert_array_equal(control_mask(obs, "flag", False), [False, True, False])
    np.testing.assert_array_equal(control_mask(obs, "gene"), [True, False, False])
    np.testing.assert_array_equal(control_mask(obs, "sflag", "True"), [True, False, True])
    with pytest.raises(TfmkitError, match="boolean"):
        control_mask(obs, "flag", "non-targeting")
    with pytest.raises(TfmkitError, match="no control cells"):
        control_mask(obs, "gene", "NTC")
    with pytest.raises(TfmkitError, match="no column 'x'"):
        control_mask(obs, "x")


def _replogle_like(sim):
    """Replogle 2022 obs layout: 'gene', 'gem_group' (integers), controls 'non-targeting'."""
    a = ad.AnnData(X=sim.X.copy(), var=sim.var[[]].copy())
    a.obs_names = sim.obs_names
    a.obs["gene"] = sim.obs["perturbation"].astype(str).to_numpy()
    a.obs["gem_group"] = sim.obs["batch"].cat.codes.to_numpy() + 1
    rng = np.random.default_rng(0)
    a.obsm["X_model"] = rng.normal(size=(a.n_obs, 16)).astype(np.float32)
    return a


def test_replogle_layout_and_errors(sim):
    a = _replogle_like(sim)
    df = benchmark_perturbation(a, obsm_keys=["X_model"], perturbation_key="gene", batch_key="gem_group",
                                control_value="non-targeting", baselines=(), n_seeds=1,
                                tasks=("lin", "bmdb"), postprocessings=("center",), **FAST)
    assert set(df.embedding) == {"X_model"} and set(df.task) == {"lin", "bmdb", "avg"}
    kw = dict(baselines=(), n_seeds=1, tasks=("lin",), postprocessings=("center",))
    with pytest.raises(TfmkitError, match="no column 'perturbation'"):
        benchmark_perturbation(a, obsm_keys=["X_model"], **kw)
    with pytest.raises(TfmkitError, match="obsm keys"):
        benchmark_perturbation(a, obsm_keys=["X_scgpt"], perturbation_key="gene", batch_key="gem_group", **kw)
    with pytest.raises(TfmkitError, match="no control cells"):
        benchmark_perturbation(a, obsm_keys=["X_model"], perturbation_key="gene", batch_key="gem_group",
                               control_value="NTC", **kw)
    b = a.copy()
    b.obs.loc[b.obs.gem_group == 2, "gene"] = "A"
    with pytest.raises(TfmkitError, match="batch '2' has no control"):
        benchmark_perturbation(b, obsm_keys=["X_model"], perturbation_key="gene", batch_key="gem_group", **kw)
    c = a.copy()
    c.X = c.X * 0.5
    with pytest.raises(TfmkitError, match="raw integer counts"):
        benchmark_perturbation(c, perturbation_key="gene", batch_key="gem_group", baselines=("pca10",),
                               n_seeds=1, tasks=("lin",))
    with pytest.raises(TfmkitError, match=r"layer 'counts' is not in the AnnData; available: X \(default\)"):
        benchmark_perturbation(a, perturbation_key="gene", batch_key="gem_group", baselines=("pca10",),
                               layer="counts", n_seeds=1, tasks=("lin",))


def test_cli_simulate_and_input(tmp_path, sim):
    runner = CliRunner()
    out = tmp_path / "res"
    args = ["benchmark", "perturbation", "--simulate", "--sim-perturbations", "10", "--sim-cells", "20",
            "--sim-batches", "2", "--baselines", "pca10", "--n-seeds", "1", "--n-null", "500",
            "--tasks", "lin,p.cst", "--postprocessing", "center", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "results.csv")
    assert {"embedding", "task", "metric", "value", "std", "n_seeds"} <= set(df.columns)
    assert "SIMULATED" in (out / "results.md").read_text()
    again = runner.invoke(app, args)  # never overwrite silently
    assert again.exit_code == 2 and "already exist" in again.output, again.output
    path = tmp_path / "replogle.h5ad"
    _replogle_like(sim).write_h5ad(path)
    res = runner.invoke(app, ["benchmark", "perturbation", "-i", str(path), "--layout", "replogle2022",
                              "--obsm", "X_model", "--no-baselines", "--n-seeds", "1", "--tasks", "knn",
                              "--postprocessing", "standardize", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    assert "SIMULATED" not in (tmp_path / "r2" / "results.md").read_text()
