"""Metric registry: every registered metric is well formed and drives the report tables; every
metric name the runners emit (run on tiny synthetic data) is registered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.metric_registry import (
    METRICS,
    TASK_FAMILIES,
    get_metric,
    higher_is_better,
    register_metric,
)
from tfmkit.evaluation.report import average_ranks, format_table


@pytest.mark.parametrize("name", METRICS.names())
def test_registered_metric(name):
    m = get_metric(name)
    assert m.name == name and m.task in TASK_FAMILIES and set(m.tasks) <= set(TASK_FAMILIES)
    assert m.description and "\n" not in m.description
    fn = m.function()
    assert fn is None or (callable(fn) and fn.__doc__)
    # the report ranks and bolds by the registered direction
    df = pd.DataFrame({"embedding": ["lo", "hi"], "task": m.task, "metric": name, "value": [0.2, 0.8]})
    best, worst = ("hi", "lo") if m.higher_is_better else ("lo", "hi")
    ranks = average_ranks(df)
    assert ranks[best] == 1.0 and ranks[worst] == 2.0
    table = format_table(df)
    assert (" ↓" in table) is (not m.higher_is_better)
    assert f"| 1.00 | {best} |" in table and f"**{0.8 if m.higher_is_better else 0.2:.3f}**" in table


def test_register_decorator_and_unknown_metric():
    @register_metric("test_only_error_rate", task="probe", higher_is_better=False,
                     description="share of wrong predictions (test entry)")
    def error_rate(y_true, y_pred) -> float:
        """Fraction of mismatches."""
        return float(np.mean(np.asarray(y_true) != np.asarray(y_pred)))

    try:
        m = get_metric("test_only_error_rate")
        assert m.function() is error_rate and not higher_is_better("test_only_error_rate")
        with pytest.raises(ValueError, match="already registered"):
            register_metric("test_only_error_rate", task="probe", higher_is_better=False,
                            description="again")(error_rate)
    finally:
        METRICS._entries.pop("test_only_error_rate")
    with pytest.raises(ValueError, match="unknown task family"):
        register_metric("x_metric", task="nonsense", higher_is_better=True, description="x")(error_rate)
    with pytest.raises(TfmkitError, match="metric 'no_such_metric' is not registered"):
        format_table(pd.DataFrame({"embedding": ["a"], "task": ["t"], "metric": ["no_such_metric"],
                                   "value": [1.0]}))


def _emitted(df: pd.DataFrame) -> set[str]:
    return set(df["metric"])


def test_every_metric_the_runners_emit_is_registered():
    import anndata as ad
    import scipy.sparse as sp

    from tfmkit.datasets.simulate import simulate_perturbseq
    from tfmkit.evaluation import runners
    from tfmkit.evaluation.knn import benchmark_knn
    from tfmkit.evaluation.perturbation.runner import benchmark_perturbation
    from tfmkit.evaluation.pretraining_quality import reconstruction_metrics

    rng = np.random.default_rng(0)
    types = rng.integers(0, 3, 90)
    counts = rng.poisson(1 + 6 * (types[:, None] == np.arange(30) % 3)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(
        {"label": [f"t{t}" for t in types], "batch": rng.choice(["b0", "b1"], 90)},
        index=[f"c{i}" for i in range(90)]))
    a.obsm["emb"] = rng.normal(size=(90, 5)) + types[:, None]
    emitted = _emitted(runners.benchmark_celltype(a, label_key="label", batch_key="batch",
                                                  obsm_keys=["emb"], baselines=("pca10", "random_label_shuffle"),
                                                  n_seeds=1, probes=("knn",)))  # every probe emits the same names
    emitted |= _emitted(runners.benchmark_celltype(a, batch_key="batch", obsm_keys=["emb"],
                                                   baselines=(), n_seeds=1))
    emitted |= _emitted(benchmark_knn({"emb": a.obsm["emb"]}, a.obs["label"].to_numpy()))
    genes = ["CD3E", "CD3D", "CD3G", "CD247", "ZAP70", "LCK", "CD4", "CD8A", "MS4A1", "CD19",
             "CD79A", "CD79B", "PSMA1", "PSMA2", "PSMA3", "PSMB1", "PSMB2", "MYC", "MAX", "E2F1"]
    rep = pd.DataFrame(rng.normal(size=(len(genes), 6)), index=genes)
    emitted |= _emitted(runners.benchmark_genes(representations={"r": rep}, n_null_pairs=500,
                                                n_null_draws=1,
                                                databases=("corum", "hallmark", "canonical_pathways")))
    emitted |= _emitted(runners.benchmark_genes(representations={"r": rep}, n_null_pairs=500, n_null_draws=1,
                                                databases={"my_sets": {"s": genes[:8]}}))
    obs = rng.random((4, 10)) < 0.8
    rec = {"pred": rng.random((4, 10)), "logits": rng.normal(size=(4, 10)), "target": rng.random((4, 10)),
           "counts": rng.poisson(2, (4, 10)).astype(float), "observable": obs,
           "revealed": obs & (rng.random((4, 10)) < 0.3)}
    emitted |= set(reconstruction_metrics(rec))
    sim = simulate_perturbseq(n_perturbations=6, cells_per_perturbation=12, n_batches=2, seed=0)
    emitted |= _emitted(benchmark_perturbation(sim, control_key="is_control", control_value=True,
                                               baselines=("pca10",), n_seeds=1, n_null=100,
                                               postprocessings=("center",),
                                               databases=("corum", "hallmark", "reactome")))
    missing = sorted(m for m in emitted if m not in METRICS)
    assert not missing, f"unregistered metrics: {missing}"
    assert {"nmi", "ilisi", "accuracy", "hallmark", "my_sets", "spearman_masked", "top1", "score",
            "structural_integrity"} <= emitted
