"""Benchmark results: the long-format table of SPEC §1 and a TxFM-Table-4-style Markdown table.

Long format (one row per embedding × task × metric): columns ``embedding, task, metric, value``
plus ``std`` and ``n_seeds`` where a value is a mean over repeats (seeds, null draws), and any
extra columns a benchmark wants to keep. Per-seed rows (a ``seed`` column) are collapsed by
:func:`aggregate_seeds`.

:func:`format_table` pivots to one row per embedding and one column per ``task / metric``,
shows ``mean ± std``, and adds the **average rank** column of TxFM Table 4: for every metric
the embeddings are ranked (1 = best; ties share the average rank; the direction of every
metric comes from :mod:`tfmkit.evaluation.metric_registry`), ranks are averaged over the metrics an embedding has, and rows
are sorted by that average. :func:`write_results` writes ``OUT/results.csv`` and
``OUT/results.md``; both are reused by every ``tfmkit benchmark`` command and the ablation
runner.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.metric_registry import higher_is_better

LONG_COLUMNS = ["embedding", "task", "metric", "value", "std", "n_seeds"]
RANK_COLUMN = "avg rank"
#: Strong simple baselines a model is compared with (SPEC §6; GPL §4.6; scVI when installed).
BASELINE_PATTERN = re.compile(r"^(raw|lognorm|(raw_|lognorm_)?hvg\d+|pca\d+|scvi|gene_mean|"
                              r"control_mean|train_mean|linear_gene_embedding|l1_logistic.*|coexpression|"
                              r"logistic.*|knn_pca\d+)$")
#: Negative controls: reported, never "the best baseline" and never a model.
CONTROL_PATTERN = re.compile(r"(random_label_shuffle|depth_only|random_init|shuffled)")


def role(embedding: str) -> str:
    """``baseline``, ``control`` or ``model`` for an embedding name (see the patterns above)."""
    if BASELINE_PATTERN.match(embedding):
        return "baseline"
    return "control" if CONTROL_PATTERN.search(embedding) else "model"


def baseline_deltas(df: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """``model − best baseline`` per model embedding and ``task / metric``, with a CI.

    The best baseline is the best-scoring baseline embedding on that metric (direction from the
    metric registry). The interval is a Welch t interval across seeds from each side's mean,
    std and ``n_seeds`` (unpaired; ``NaN`` bounds with fewer than 2 seeds on either side).
    Columns: ``embedding, task, metric, value, baseline, baseline_value, delta, ci_low, ci_high,
    n_seeds``; ``delta`` is signed so that positive = the model is better.
    """
    from scipy import stats

    df = aggregate_seeds(df)
    if "std" not in df:
        df = df.assign(std=np.nan)
    if "n_seeds" not in df:
        df = df.assign(n_seeds=1)
    roles = df["embedding"].astype(str).map(role)
    rows = []
    for (task, metric), g in df.groupby(["task", "metric"], sort=False):
        sign = 1.0 if higher_is_better(metric) else -1.0
        base = g[(roles[g.index] == "baseline") & np.isfinite(g["value"])]
        if base.empty:
            continue
        best = base.loc[(sign * base["value"]).idxmax()]
        for _, r in g[roles[g.index] == "model"].iterrows():
            delta = sign * (float(r["value"]) - float(best["value"]))
            n1, n2 = int(r["n_seeds"] or 1), int(best["n_seeds"] or 1)
            lo = hi = np.nan
            if n1 > 1 and n2 > 1:
                v1, v2 = float(r["std"]) ** 2 / n1, float(best["std"]) ** 2 / n2
                se = np.sqrt(v1 + v2)
                dof = (v1 + v2) ** 2 / max(v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1), 1e-300)
                half = float(stats.t.ppf(0.5 + level / 2, dof)) * se if se > 0 else 0.0
                lo, hi = delta - half, delta + half
            rows.append({"embedding": r["embedding"], "task": task, "metric": metric,
                         "value": float(r["value"]), "baseline": best["embedding"],
                         "baseline_value": float(best["value"]), "delta": delta,
                         "ci_low": lo, "ci_high": hi, "n_seeds": min(n1, n2)})
    return pd.DataFrame(rows, columns=["embedding", "task", "metric", "value", "baseline",
                                       "baseline_value", "delta", "ci_low", "ci_high", "n_seeds"])


def format_deltas(deltas: pd.DataFrame, precision: int = 3) -> str:
    """Markdown lines ``model − best baseline = +0.03 [−0.01, 0.07]`` (empty without models)."""
    if deltas.empty:
        return ""
    p = precision
    lines = ["## Model − best baseline (positive = model better; 95% Welch t interval across "
             "seeds, — with one seed)", "",
             "| embedding | task / metric | model | best baseline | delta [95% CI] |",
             "|---|---|---|---|---|"]
    for _, r in deltas.iterrows():
        ci = (f"[{r.ci_low:+.{p}f}, {r.ci_high:+.{p}f}]" if np.isfinite(r.ci_low) else "—")
        lines.append(f"| {r.embedding} | {r.task} / {r.metric} | {r.value:.{p}f} | "
                     f"{r.baseline} {r.baseline_value:.{p}f} | {r.delta:+.{p}f} {ci} |")
    return "\n".join(lines) + "\n"


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Collapse per-seed rows (column ``seed``) to ``value`` = mean, ``std`` (ddof 1; 0 for one
    seed) and ``n_seeds`` per ``embedding, task, metric``; other frames are returned as is."""
    _require(df)
    if "seed" not in df.columns:
        return df.copy()
    g = df.groupby(["embedding", "task", "metric"], sort=False, observed=True)["value"]
    out = g.agg(value="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                n_seeds="count").reset_index()
    return out[LONG_COLUMNS]


def _require(df: pd.DataFrame) -> None:
    missing = [c for c in ("embedding", "task", "metric", "value") if c not in df.columns]
    if missing:
        raise TfmkitError(f"results table lacks column(s) {missing}; expected long format "
                          f"{LONG_COLUMNS}")


def average_ranks(df: pd.DataFrame) -> pd.Series:
    """Average per-metric rank of every embedding (1 = best), NaN metrics ignored."""
    df = aggregate_seeds(df)
    wide = df.pivot_table(index="embedding", columns=["task", "metric"], values="value",
                          aggfunc="mean", sort=False)
    ranks = []
    for task, metric in wide.columns:
        col = wide[(task, metric)]
        asc = not higher_is_better(metric)
        ranks.append(col.rank(ascending=asc, method="average"))
    if not ranks:
        return pd.Series(dtype=float)
    return pd.concat(ranks, axis=1).mean(axis=1)


def _fmt(value: float, std: float | None, precision: int) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    s = f"{value:.{precision}f}"
    if std is not None and np.isfinite(std) and round(std, precision) > 0:
        s += f" ± {std:.{precision}f}"
    return s


def format_table(df: pd.DataFrame, *, title: str | None = None, precision: int = 3,
                 rank: bool = True) -> str:
    """Markdown table: one row per embedding, ``avg rank`` first (sorted ascending), then one
    ``task / metric`` column per metric with ``mean ± std``; best value per column in bold."""
    df = aggregate_seeds(df)
    if df.empty:
        raise TfmkitError("no benchmark results to format")
    cols = list(dict.fromkeys(zip(df["task"], df["metric"])))
    task_order = list(dict.fromkeys(df["task"]))
    cols.sort(key=lambda tm: task_order.index(tm[0]))  # group columns by task, stable
    embs = list(dict.fromkeys(df["embedding"]))
    has_std = "std" in df.columns
    cell = {(r.embedding, r.task, r.metric): (float(r.value),
                                              float(r.std) if has_std and pd.notna(r.std) else None)
            for r in df.itertuples(index=False)}
    ranks = average_ranks(df) if rank else None
    if ranks is not None:
        embs = sorted(embs, key=lambda e: (np.nan_to_num(ranks.get(e, np.nan), nan=np.inf),
                                           embs.index(e)))
    best = {}
    for task, metric in cols:
        vals = {e: cell[(e, task, metric)][0] for e in embs if (e, task, metric) in cell
                and np.isfinite(cell[(e, task, metric)][0])}
        if vals:
            pick = max if higher_is_better(metric) else min
            best[(task, metric)] = pick(vals.values())
    header = (["rank"] if rank else []) + ["embedding"] + [
        f"{t} / {m}{'' if higher_is_better(m) else ' ↓'}" for t, m in cols]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for e in embs:
        row = [f"{ranks[e]:.2f}"] if rank else []
        row.append(str(e))
        for key in cols:
            v, s = cell.get((e, *key), (np.nan, None))
            txt = _fmt(v, s, precision)
            if key in best and np.isfinite(v) and v == best[key]:
                txt = f"**{txt}**"
            row.append(txt)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def result_paths(out_dir, *, overwrite: bool = False) -> tuple[Path, Path]:
    """``(out_dir/results.csv, out_dir/results.md)``, creating ``out_dir``; refuses to replace
    existing result files unless ``overwrite`` (nothing the user had is lost silently)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TfmkitError(f"--out {out} exists and is not a directory; choose another path")
    csv_path, md_path = out / "results.csv", out / "results.md"
    existing = [str(p) for p in (csv_path, md_path) if p.exists()]
    if existing and not overwrite:
        raise TfmkitError(f"{', '.join(existing)} already exist; pass --overwrite or choose "
                          "another --out directory")
    out.mkdir(parents=True, exist_ok=True)
    return csv_path, md_path


def write_results(df: pd.DataFrame, out_dir, title: str, *, overwrite: bool = False,
                  precision: int = 3, notes: str = "") -> dict:
    """Write ``out_dir/results.csv`` (long format) and ``out_dir/results.md`` (title, table,
    optional ``notes``). Refuses to replace existing result files unless ``overwrite``.
    Returns ``{"csv": path, "md": path, "table": markdown}``."""
    _require(df)
    csv_path, md_path = result_paths(out_dir, overwrite=overwrite)
    df = df.copy()
    for c in ("std", "n_seeds"):
        if c not in df.columns:
            df[c] = np.nan if c == "std" else 1
    cols = LONG_COLUMNS + [c for c in df.columns if c not in LONG_COLUMNS]
    df[cols].to_csv(csv_path, index=False)
    table = format_table(df, precision=precision)
    md = f"# {title}\n\n{table}\n"
    md += ("Rank: mean over metrics of each embedding's rank (1 = best; ↓ = lower is better). "
           "Values: mean ± std over seeds.\n")
    deltas = format_deltas(baseline_deltas(df), precision)
    if deltas:
        md += f"\n{deltas}"
    if notes:
        md += f"\n{notes.strip()}\n"
    md_path.write_text(md, encoding="utf-8")
    return {"csv": csv_path, "md": md_path, "table": table}
