"""Ablation results: aggregation over seeds, significance vs the default, Table-5 Markdown.

Significance vs the default (TxFM §C): proportions with a known number of scored items
(``accuracy``; ``n`` = cells) use the pooled two-proportion z-test with the successes and items
summed over seeds; every other metric a two-sided Welch t-test over the per-seed values.
Gene recall is tested with the t-test, as in the paper (its known pairs are not independent, so
a z-test over millions of pairs would call every difference significant). p-values are adjusted
with Benjamini–Hochberg within each ``task/metric`` across all ablation cells (the paper's
family; ``bh_family="all"`` pools every comparison). Metric directions (bold = best, ↓) come
from :mod:`tfmkit.evaluation.metric_registry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tfmkit.evaluation.metric_registry import higher_is_better
from tfmkit.evaluation.significance import benjamini_hochberg, two_proportion_ztest, welch_ttest

if TYPE_CHECKING:
    from tfmkit.ablation.grid import Grid

PROPORTION_METRICS = frozenset({"accuracy"})
SIGNIFICANCE_NOTE = (
    "Values: mean ± std over seeds. `*`: different from the default row with BH-adjusted "
    "p < 0.05 (TxFM §C): two-proportion z-test for accuracies (cells scored, summed over seeds), "
    "Welch t-test over seeds for every other metric (needs ≥ 2 seeds). **Bold**: best in the "
    "group (↓ = lower is better). `knn_*`: zero-shot CLS embedding, kNN k=10, 5-fold CV; "
    "`recon_*`: held-out reconstruction at the given mask rate (Poisson loss only for "
    "log1p-space objectives); `recall_enc/dec`: gene-gene relationship recall of encoder "
    "tokens / decoder weights (chance = 0.10).\n")


def compare_to_default(per_seed: pd.DataFrame, grid: "Grid", *, bh_family: str = "metric",
                       alpha: float = 0.05) -> pd.DataFrame:
    """Aggregate per-seed rows (``embedding, task, metric, value, n, seed``) over seeds and
    test every non-default cell against the default (module doc). Returns columns ``group,
    embedding, task, metric, value, std, n_seeds, n, test, p_value, p_adj, significant``."""
    groups_of: dict[str, list[str]] = {}
    for g, rows in grid.groups.items():
        for _, c in rows:
            if c.name != grid.default.name:
                groups_of.setdefault(c.name, []).append(g)
    ps = per_seed.copy()
    ps["successes"] = np.where(ps["metric"].isin(PROPORTION_METRICS),
                               np.rint(ps["value"] * ps["n"]), np.nan)
    keys = ["embedding", "task", "metric"]
    g = ps.groupby(keys, sort=False)
    agg = g.agg(value=("value", "mean"), n_seeds=("value", "count"), n=("n", "sum"),
                successes=("successes", "sum")).reset_index()
    agg["std"] = g["value"].agg(lambda v: float(np.std(v, ddof=1)) if v.notna().sum() > 1 else 0.0).to_numpy()
    default = grid.default.name
    vals = {k: v["value"].to_numpy() for k, v in g}
    tests, pvals = [], []
    for r in agg.itertuples(index=False):
        ref = (default, r.task, r.metric)
        if r.embedding == default or ref not in vals:
            tests.append("")
            pvals.append(np.nan)
            continue
        if r.metric in PROPORTION_METRICS and np.isfinite(r.value):
            d = agg[(agg.embedding == default) & (agg.task == r.task) & (agg.metric == r.metric)].iloc[0]
            tests.append("z")
            pvals.append(two_proportion_ztest(int(r.successes), int(r.n), int(d.successes), int(d.n)))
        else:
            tests.append("welch_t")
            pvals.append(welch_ttest(vals[(r.embedding, r.task, r.metric)], vals[ref]))
    agg["test"], agg["p_value"] = tests, pvals
    agg["p_adj"] = np.nan
    fam = agg[["task", "metric"]].agg("/".join, axis=1) if bh_family == "metric" else pd.Series("all", index=agg.index)
    for _, idx in agg.groupby(fam).groups.items():
        agg.loc[idx, "p_adj"] = benjamini_hochberg(agg.loc[idx, "p_value"].to_numpy())
    agg["significant"] = agg["p_adj"] < alpha
    agg.insert(0, "group", [",".join(groups_of.get(e, ["default"])) for e in agg["embedding"]])
    return agg[["group", "embedding", "task", "metric", "value", "std", "n_seeds", "n", "test",
                "p_value", "p_adj", "significant"]]


def format_ablation_table(res: pd.DataFrame, grid: "Grid", *, precision: int = 3) -> str:
    """Markdown: one Table-5-style sub-table per group (rows = the group's cells with the
    default marked, columns = ``task / metric``), ``*`` where ``p_adj < 0.05``, best in bold."""
    cols = list(dict.fromkeys(zip(res["task"], res["metric"])))
    cell = {(r.embedding, r.task, r.metric): r for r in res.itertuples(index=False)}
    lines = []
    for gname, rows in grid.groups.items():
        header = ["cell"] + [f"{t} / {m}{'' if higher_is_better(m) else ' ↓'}" for t, m in cols]
        lines += [f"### {gname}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        best = {}
        for t, m in cols:
            v = [cell[(c.name, t, m)].value for _, c in rows if (c.name, t, m) in cell]
            v = [x for x in v if np.isfinite(x)]
            if v:
                best[(t, m)] = (max if higher_is_better(m) else min)(v)
        for label, c in rows:
            out = [f"{label} (default)" if c.name == grid.default.name else label]
            for t, m in cols:
                r = cell.get((c.name, t, m))
                if r is None or not np.isfinite(r.value):
                    out.append("–")
                    continue
                s = f"{r.value:.{precision}f}"
                if r.n_seeds > 1:
                    s += f" ± {r.std:.{precision}f}"
                if r.significant:
                    s += "*"
                if best.get((t, m)) == r.value:
                    s = f"**{s}**"
                out.append(s)
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines)
