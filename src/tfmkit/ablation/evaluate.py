"""Evaluation of one trained ablation model through the registered benchmarks (TxFM §5.2).

Metrics per model (whichever the grid's ``evaluation`` enables), each computed by the runner of
:data:`tfmkit.evaluation.benchmark_registry.BENCHMARKS` that ``tfmkit benchmark`` and the demo
use too; this module only embeds the cells (the caller's job) and renames the rows:

- ``knn_<dataset>``: zero-shot kNN cell-type accuracy / macro F1 of the CLS embedding (runner
  ``knn``: k = 10, stratified 5-fold CV, pooled over cells so every cell is scored once and the
  accuracy can enter a two-proportion z-test with ``n`` = cells);
- ``recon_<dataset>_mask<r>``: held-out reconstruction quality (GPL §4.5; runner
  ``pretraining``); the Poisson loss of TxFM eq. 2 only for log1p-space objectives;
- ``recall_enc`` / ``recall_dec``: gene-gene relationship recall of encoder tokens / decoder
  weights (TxFM §B.3; runner ``genes``).
"""

from __future__ import annotations

import pandas as pd

from tfmkit.errors import TfmkitError

#: Held-out labelled datasets: name -> (loader, label column, obs column of library sizes).
CELLTYPE_SETS = {"pbmc68k": ("load_pbmc68k", "bulk_labels", "n_counts"),
                 "wu2020": ("load_wu2020", "cluster_orig", None)}
LOG1P_OBJECTIVES = frozenset({"poisson_nll", "mse", "smooth_l1"})
MIN_CLASS_SIZE = 5
EVAL_COLUMNS = ["task", "metric", "value", "n"]


def load_eval_sets(evaluation: dict) -> dict:
    """``{name: (AnnData, label_key, library_key)}`` of the enabled cell-type datasets, with
    classes of fewer than 5 cells left out (they cannot be split 5-fold)."""
    from tfmkit import datasets

    out = {}
    for name in evaluation.get("celltype") or []:
        if name not in CELLTYPE_SETS:
            raise TfmkitError(f"unknown cell-type evaluation set {name!r}; use {sorted(CELLTYPE_SETS)}")
        loader, label, lib = CELLTYPE_SETS[name]
        ad = getattr(datasets, loader)()
        vc = ad.obs[label].value_counts()
        out[name] = (ad[ad.obs[label].isin(vc[vc >= MIN_CLASS_SIZE].index).to_numpy()].copy(), label, lib)
    pq = evaluation.get("pretraining")
    if pq and pq["dataset"] not in out:
        out.setdefault("_pretrain", (getattr(datasets, CELLTYPE_SETS[pq["dataset"]][0])(), None, None))
    return out


def evaluate_model(model_dir, evaluation: dict, eval_sets: dict, *, objective: str,
                   seed: int = 0) -> pd.DataFrame:
    """Per-model rows ``task, metric, value, n`` (``n`` = items scored, for proportions).

    ``objective``: the model's training objective (``train.objective`` of its run config),
    which decides whether the Poisson loss is meaningful for its predictions."""
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS
    from tfmkit.inference import embed, load_model

    model = load_model(model_dir)
    rows = []
    for name in evaluation.get("celltype") or []:
        ad, label, lib = eval_sets[name]
        ad = ad.copy()
        # the bundled sets are known subsets (pbmc68k: 765 HVGs): coverage is reported, not refused
        embed(ad, model, key="X_abl", seed=seed, library_key=lib, allow_low_coverage=True)
        df = BENCHMARKS.get("knn").run({"model": ad.obsm["X_abl"]}, ad.obs[label].to_numpy(),
                                       seed=seed, pooled=True)
        rows += [{"task": f"knn_{name}", "metric": r.metric, "value": r.value, "n": r.n}
                 for r in df.itertuples(index=False)]
    pq = evaluation.get("pretraining")
    if pq:
        ad = (eval_sets.get(pq["dataset"]) or eval_sets["_pretrain"])[0]
        df = BENCHMARKS.get("pretraining").run(model, ad, mask_rates=tuple(pq.get("mask_rates", [0.9])),
                                               mean_baseline=False)
        log1p = objective in LOG1P_OBJECTIVES
        for r in df.itertuples(index=False):
            if r.metric not in pq.get("metrics", [r.metric]):
                continue
            # the Poisson loss of eq. 2 needs predictions in log1p space (not count logits)
            v = r.value if (r.metric != "poisson_loss" or log1p) else float("nan")
            rows.append({"task": f"recon_{pq['dataset']}_{r.task}", "metric": r.metric,
                         "value": v, "n": ad.n_obs})
    gr = evaluation.get("gene_recall")
    if gr:
        from tfmkit.evaluation.gene_recall import PCA_COMPONENTS
        from tfmkit.inference import gene_embeddings

        reps = {}
        for kind in ("encoder", "decoder"):
            try:
                reps[kind] = (gene_embeddings(model, kind=kind), PCA_COMPONENTS[kind])
            except TfmkitError:
                pass  # e.g. a gene encoder without a table
        df = BENCHMARKS.get("genes").run(representations=reps, databases=tuple(gr["databases"]),
                                         n_null_draws=int(gr.get("n_null_draws", 3)),
                                         n_null_pairs=int(gr.get("n_null_pairs", 100_000)), seed=seed)
        for r in df.itertuples(index=False):  # task names keep GRN / LDA rows apart from recall
            task = "recall" if r.task == "gene_recall" else r.task
            rows.append({"task": f"{task}_{r.embedding[:3]}", "metric": r.metric,
                         "value": r.value, "n": getattr(r, "n_pairs", None)})
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)
