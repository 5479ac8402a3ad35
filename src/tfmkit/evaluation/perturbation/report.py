"""Write the perturbation benchmark results: ``OUT/results.csv`` and a Table-2-style
``OUT/results.md``.

``results.csv`` is the full long table of :func:`benchmark_perturbation` (SPEC §1 columns
``embedding, task, metric, value, std, n_seeds`` first, then ``postprocessing`` and ``best``):
every metric under every post-processing, the task ``score`` rows and the ``avg`` rows.
``results.md`` holds (1) the Table-2 view — best-post-processing task scores and their
average, best per column in bold —, (2) which post-processing was chosen, and (3) the per-metric
values at the chosen post-processing (rendered by the shared
:func:`tfmkit.evaluation.report.format_table`).
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from tfmkit.evaluation.metric_registry import higher_is_better
from tfmkit.evaluation.perturbation.runner import TASKS, table2
from tfmkit.evaluation.report import LONG_COLUMNS, format_table, result_paths

SIMULATED_BANNER = ("> **SIMULATED DATA** — input produced by `tfmkit.datasets.simulate_perturbseq` "
                    "(real control cells, simulated perturbations); not a real Perturb-seq result.")


def table2_markdown(results: pd.DataFrame, precision: int = 2) -> str:
    """Markdown Table 2: rows = embeddings, columns = task scores (percent) + avg."""
    wide = table2(results)
    pick = max if higher_is_better("score") else min
    best = {c: pick(wide[c].dropna(), default=np.nan) for c in wide.columns}
    head = ["embedding", *wide.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for emb, row in wide.iterrows():
        cells = []
        for c in wide.columns:
            v = row[c]
            txt = "–" if not np.isfinite(v) else f"{v:.{precision}f}"
            cells.append(f"**{txt}**" if np.isfinite(v) and v == best[c] else txt)
        lines.append("| " + " | ".join([str(emb), *cells]) + " |")
    return "\n".join(lines) + "\n"


def chosen_postprocessing(results: pd.DataFrame) -> pd.DataFrame:
    """Embedding x task table of the post-processing with the best task score."""
    best = results[(results.metric == "score") & results.best & (results.task != "avg")]
    wide = best.pivot_table(index="embedding", columns="task", values="postprocessing",
                            aggfunc="first", sort=False)
    return wide[[t for t in TASKS if t in wide.columns]]


def write_perturbation_results(results: pd.DataFrame, out_dir, *, title: str = "Perturbation-"
                               "representation benchmark", notes: str = "", overwrite: bool = False,
                               simulated: bool | None = None) -> dict:
    """Write ``results.csv`` and ``results.md`` into ``out_dir`` (created if needed); refuses to
    replace existing files unless ``overwrite``. Returns ``{"csv", "md", "table"}``."""
    csv_path, md_path = result_paths(out_dir, overwrite=overwrite)
    cols = LONG_COLUMNS + [c for c in results.columns if c not in LONG_COLUMNS]
    results[cols].to_csv(csv_path, index=False)

    simulated = results.attrs.get("simulated", False) if simulated is None else simulated
    table = table2_markdown(results)
    chosen = chosen_postprocessing(results)
    pp_lines = ["| embedding | " + " | ".join(chosen.columns) + " |",
                "|" + "|".join(["---"] * (len(chosen.columns) + 1)) + "|"]
    pp_lines += ["| " + " | ".join([str(e), *[str(v) for v in r]]) + " |" for e, r in chosen.iterrows()]
    detail = results[results.best & (results.metric != "score")]
    md = [f"# {title}", ""]
    if simulated:
        md += [SIMULATED_BANNER, ""]
    md += ["## Table 2 view (percent; best post-processing per task)", "", table,
           "ilisi: scaled iLISI over batches; lin: linear probe top-1/top-5 on unseen batches; "
           "knn: kNN retrieval top-1/top-5 across disjoint batches; p.cst: % perturbations with "
           "consistency p < 0.01; bmdb: recall of known gene pairs in the 5% tails (chance 10%); "
           "inv: mean of per-gene Spearman and structural integrity of a linear decoder; avg: mean "
           "of the six task scores (TxFM §B.1).", "",
           "## Post-processing chosen per task", "", "\n".join(pp_lines), ""]
    if not detail.empty:
        md += ["## Metrics at the chosen post-processing (mean ± std over seeds)", "",
               format_table(detail[LONG_COLUMNS], precision=2, rank=False)]
    if notes:
        md += ["", notes.strip()]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return {"csv": csv_path, "md": md_path, "table": table}
