"""`model − best baseline [95% CI]` in every results.md (issue 11 Part B item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfmkit.evaluation.report import baseline_deltas, role, write_results


def _per_seed(rng):
    rows = []
    for emb, mean in (("X_tfmkit", 0.62), ("pca50", 0.58), ("lognorm", 0.55),
                      ("random_label_shuffle", 0.95)):
        for seed in range(5):
            rows.append(dict(embedding=emb, task="clustering", metric="nmi", seed=seed,
                             value=mean + 0.03 * rng.standard_normal()))
    return pd.DataFrame(rows)


def test_delta_and_welch_interval_match_scipy():
    df = _per_seed(np.random.default_rng(0))
    (d,) = baseline_deltas(df).itertuples()
    model = df[df.embedding == "X_tfmkit"].value.to_numpy()
    best = max(("pca50", "lognorm"), key=lambda e: df[df.embedding == e].value.mean())
    base = df[df.embedding == best].value.to_numpy()
    ref = stats.ttest_ind(model, base, equal_var=False).confidence_interval(0.95)
    assert d.baseline == best and d.delta == pytest.approx(model.mean() - base.mean())
    assert (d.ci_low, d.ci_high) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert d.n_seeds == 5  # the shuffled-label control (0.95) is never the best baseline


def test_lower_is_better_metric_sign_and_single_seed():
    df = pd.DataFrame([dict(embedding="X_tfmkit", task="mask90", metric="poisson_loss", value=1.0),
                       dict(embedding="gene_mean", task="mask90", metric="poisson_loss", value=1.5)])
    (d,) = baseline_deltas(df).itertuples()
    assert d.delta == pytest.approx(0.5) and np.isnan(d.ci_low)  # positive = model better


def test_roles():
    assert [role(e) for e in ("pca50", "hvg2000", "scvi", "raw", "control_mean")] == ["baseline"] * 5
    assert [role(e) for e in ("random_label_shuffle", "depth_only_control", "tfmkit_random_init")] == ["control"] * 3
    assert role("X_tfmkit") == role("finetuned") == "model"


def test_results_md_has_the_delta_section(tmp_path):
    res = write_results(_per_seed(np.random.default_rng(1)), tmp_path, "Cell types")
    md = res["md"].read_text()
    assert "## Model − best baseline" in md and "| X_tfmkit | clustering / nmi |" in md
