"""AnnData-facing runner of the perturbation-representation benchmark (TxFM Table 2, §B.1).

``benchmark_perturbation(adata, ...)`` evaluates every embedding (``adata.obsm`` keys and count
baselines computed from the raw counts) under every post-processing on six tasks and returns the
long results table. Aggregation follows TxFM §B.1: metric values are averaged over seeds; the
metrics of a task are averaged into the task score; per embedding and task the post-processing
with the best score is kept (``best`` column); ``avg`` is the mean of the best task scores.

Tasks and their metrics (all in percent):

=======  =========================================  =====================================
task     metrics (score = mean of)                  seeds
=======  =========================================  =====================================
ilisi    ilisi                                      one cell subsample (seed 0)
lin      top1, top5 (linear probe, unseen batches)  held-out batches rotate with the seed
knn      top1, top5 (retrieval across batches)      query/reference halves per seed
p.cst    consistent (fraction with p < 0.01)        null cells per seed
bmdb     one per database; score = their mean      deterministic
inv      spearman, structural_integrity             deterministic (leave-one-batch-out)
=======  =========================================  =====================================

The ``random_label_shuffle`` baseline is the ``shuffle_base`` embedding (1024 HVG, as in TxFM
§B.1.2) evaluated with, for each seed, the perturbation labels and the decoded expression rows
permuted within batch x control strata: the gene inputs stay fixed while every embedding is
paired with the label (and expression) of a random cell of the same batch and control status.
iLISI, which uses no labels, therefore equals that of the unshuffled embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.baselines import RANDOM_LABEL_SHUFFLE, baseline_embedding
from tfmkit.evaluation.inputs import counts_matrix
from tfmkit.evaluation.perturbation.consistency import N_NULL, ConsistencyTest
from tfmkit.evaluation.perturbation.databases import DATABASES, relationship_databases
from tfmkit.evaluation.perturbation.invertibility import invertibility
from tfmkit.evaluation.perturbation.lisi import ilisi
from tfmkit.evaluation.perturbation.postprocess import (
    POSTPROCESSORS,
    align_for_consistency,
    postprocess,
)
from tfmkit.evaluation.perturbation.recall import perturbation_means, relationship_recall
from tfmkit.evaluation.perturbation.ridge import BatchRidge, group_codes
from tfmkit.evaluation.perturbation.separation import (
    held_out_batches,
    knn_retrieval,
    linear_probe,
    split_batches_in_half,
)

TASKS = ("ilisi", "lin", "knn", "p.cst", "bmdb", "inv")
DEFAULT_BASELINES = ("raw", "lognorm", "hvg5000", "hvg1024", "pca50", RANDOM_LABEL_SHUFFLE)
RESULT_COLUMNS = ["embedding", "task", "metric", "postprocessing", "value", "std", "n_seeds", "best"]
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def control_mask(obs: pd.DataFrame, control_key: str, control_value=None) -> np.ndarray:
    """Boolean control flag from ``obs[control_key]``.

    Boolean columns are compared as booleans (``control_value`` True/False or one of the strings
    true/false/1/0/yes/no; default True); other columns are compared as strings (default
    ``"non-targeting"``). Never compares a boolean column to a string.
    """
    if control_key not in obs.columns:
        raise TfmkitError(f"obs has no column {control_key!r} (control flag); "
                          f"available: {list(obs.columns)[:20]}")
    col = obs[control_key]
    values = set(pd.unique(col.dropna()))
    if pd.api.types.is_bool_dtype(col) or (values and values <= {True, False}):
        if control_value is None or isinstance(control_value, (bool, np.bool_)):
            want = True if control_value is None else bool(control_value)
        elif str(control_value).strip().lower() in _TRUE:
            want = True
        elif str(control_value).strip().lower() in _FALSE:
            want = False
        else:
            raise TfmkitError(f"obs[{control_key!r}] is boolean; pass --control-value true or false, "
                              f"not {control_value!r}")
        mask = col.fillna(not want).astype(bool).to_numpy() == want
    else:
        want = "non-targeting" if control_value is None else str(control_value)
        mask = col.astype(str).to_numpy() == want
    if not mask.any():
        examples = [str(v) for v in list(values)[:8]]
        raise TfmkitError(f"no control cells: obs[{control_key!r}] never equals {control_value!r} "
                          f"(values include {examples}); set --control-value")
    return mask


def _counts(adata, layer: str | None):
    X, _ = counts_matrix(adata, layer, why="baselines and the invertibility target need them")
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)


def _validate(adata, perturbation_key, batch_key):
    for key, what in ((perturbation_key, "perturbation label"), (batch_key, "batch")):
        if key not in adata.obs.columns:
            raise TfmkitError(f"obs has no column {key!r} ({what}); available: "
                              f"{list(adata.obs.columns)[:20]}")


def _shuffle_within_strata(strata: np.ndarray, seed: int) -> np.ndarray:
    """Row permutation that only exchanges cells of the same stratum (batch x control flag)."""
    from tfmkit.evaluation.baselines import shuffled_labels

    perm = np.arange(len(strata))
    for i, g in enumerate(np.unique(strata)):
        idx = np.flatnonzero(strata == g)
        perm[idx] = shuffled_labels(idx, seed=seed * 1000 + i)
    return perm


class _Context:
    """Per-dataset inputs shared by every embedding."""

    def __init__(self, labels, batches, ctrl, genes, Y, databases, n_null):
        self.labels, self.batches, self.ctrl = labels, batches, ctrl
        self.genes, self.Y, self.databases, self.n_null = genes, Y, databases, n_null


def _evaluate(Z: np.ndarray, ctx: _Context, tasks, seeds, shuffle: bool = False) -> list[tuple]:
    """Rows ``(task, metric, seed, value)`` for one post-processed embedding.

    With ``shuffle`` the perturbation labels (and the expression rows decoded by ``inv``) are
    permuted within batch x control strata for each seed — the ``random_label_shuffle``
    baseline. Because control statistics are computed on the same set of control rows, this is
    exactly the same as post-processing an embedding whose rows were shuffled within strata.
    """
    rows = []
    b, ctrl = ctx.batches, ctx.ctrl
    perms = {s: (_shuffle_within_strata(group_codes(b, ctrl), s) if shuffle else None) for s in seeds}
    lab = {s: (ctx.labels if p is None else ctx.labels[p]) for s, p in perms.items()}
    per_seed = seeds if shuffle else seeds[:1]  # seeds for label-dependent deterministic tasks
    ridge = BatchRidge(Z, group_codes(b, ctrl)) if {"lin", "inv"} & set(tasks) else None
    if "ilisi" in tasks:  # label-free: one value
        rows.append(("ilisi", "ilisi", seeds[0], ilisi(Z, b, seed=seeds[0])))
    if "lin" in tasks:
        groups = [seeds] if not shuffle else [[s] for s in seeds]
        for grp in groups:
            splits = [held_out_batches(b, s) for s in grp]
            res = linear_probe(Z, lab[grp[0]], b, test_batches=splits, is_control=ctrl, ridge=ridge)
            for s, r in zip(grp, res):
                rows += [("lin", "top1", s, r[1]), ("lin", "top5", s, r[5])]
    if "knn" in tasks:
        pert = ~ctrl
        Zp, bp = Z[pert], b[pert]
        for s in seeds:
            query, _ = split_batches_in_half(b, s)
            r = knn_retrieval(Zp, lab[s][pert], bp, query_batches=query, seed=s)
            rows += [("knn", "top1", s, r[1]), ("knn", "top5", s, r[5])]
    if "p.cst" in tasks:
        A = align_for_consistency(Z, b, ctrl)
        test = None
        for s in seeds:
            if test is None or shuffle:
                test = ConsistencyTest(A, lab[s], is_control=ctrl)
            rows.append(("p.cst", "consistent", s, test.score(ctx.n_null, seed=s)))
    if "bmdb" in tasks:
        for s in per_seed:
            means = perturbation_means(Z, lab[s], exclude=ctrl)
            genes = [ctx.genes.get(p, p) for p in means.index]
            rec = relationship_recall(means.to_numpy(), genes, ctx.databases)
            rows += [("bmdb", db, s, v) for db, v in rec.items() if db != "mean"]
    if "inv" in tasks:
        for s in per_seed:
            Y = ctx.Y if perms[s] is None else ctx.Y[perms[s]]
            rows += [("inv", m, s, v) for m, v in invertibility(Z, Y, b, ctrl, ridge=ridge).items()]
    return rows


def _aggregate(raw: pd.DataFrame) -> pd.DataFrame:
    g = raw.groupby(["embedding", "postprocessing", "task", "metric"], sort=False)["value"]
    agg = g.agg(value="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                n_seeds="count").reset_index()
    score = (agg.groupby(["embedding", "postprocessing", "task"], sort=False)["value"]
             .mean().rename("value").reset_index())
    score["metric"], score["std"] = "score", np.nan
    score["n_seeds"] = agg.groupby(["embedding", "postprocessing", "task"], sort=False)["n_seeds"].max().to_numpy()
    best_idx = score.dropna(subset=["value"]).groupby(["embedding", "task"], sort=False)["value"].idxmax()
    best_pp = {(score.at[i, "embedding"], score.at[i, "task"]): score.at[i, "postprocessing"] for i in best_idx}
    out = pd.concat([agg, score], ignore_index=True)
    out["best"] = [best_pp.get((e, t)) == p for e, t, p in zip(out.embedding, out.task, out.postprocessing)]
    best = out[out.best & (out.metric == "score")]
    avg = best.groupby("embedding", sort=False)["value"].mean().rename("value").reset_index()
    avg["task"], avg["metric"], avg["postprocessing"], avg["std"], avg["best"] = "avg", "score", "best", np.nan, True
    avg["n_seeds"] = raw["seed"].nunique()
    out = pd.concat([out, avg], ignore_index=True)
    order = {t: i for i, t in enumerate((*TASKS, "avg"))}
    emb_order = {e: i for i, e in enumerate(pd.unique(raw["embedding"]))}
    out = out.sort_values(["embedding", "task", "postprocessing", "metric"],
                          key=lambda c: c.map(order) if c.name == "task" else
                          (c.map(emb_order) if c.name == "embedding" else c), kind="stable")
    return out[RESULT_COLUMNS].reset_index(drop=True)


def table2(results: pd.DataFrame) -> pd.DataFrame:
    """Table-2-style wide view: one row per embedding, best-post-processing task scores + avg."""
    best = results[(results.metric == "score") & results.best]
    wide = best.pivot_table(index="embedding", columns="task", values="value", sort=False)
    cols = [t for t in (*TASKS, "avg") if t in wide.columns]
    return wide[cols]


def benchmark_perturbation(adata, *, obsm_keys: Sequence[str] = (), perturbation_key: str = "perturbation",
                           batch_key: str = "batch", control_key: str | None = None,
                           control_value=None, baselines: Sequence[str] = DEFAULT_BASELINES,
                           layer: str | None = None, n_seeds: int = 5,
                           postprocessings: Sequence[str] = tuple(POSTPROCESSORS),
                           tasks: Sequence[str] = TASKS, databases: Sequence[str] = DATABASES,
                           gene_key: str | None = None, n_null: int = N_NULL,
                           n_expr_genes: int = 1000, shuffle_base: str = "hvg1024",
                           progress: bool = False) -> pd.DataFrame:
    """Run the perturbation-representation benchmark on ``adata``; returns the long table.

    ``obsm_keys`` name model embeddings; ``baselines`` are computed from the raw counts in ``X``
    (or ``layer``): ``raw``, ``lognorm``, ``hvg<N>``, ``pca<N>``, ``random_label_shuffle``.
    Controls are the cells with ``obs[control_key] == control_value`` (``control_key`` defaults
    to ``perturbation_key``; see :func:`control_mask` for boolean columns). ``gene_key`` names
    the obs column with the perturbed gene symbol used for relationship recall (default: the
    perturbation labels themselves). Columns of the result: ``embedding, task, metric,
    postprocessing, value, std, n_seeds, best``. Nothing is written to ``adata``.
    """
    _validate(adata, perturbation_key, batch_key)
    for t in tasks:
        if t not in TASKS:
            raise TfmkitError(f"unknown task {t!r}; use some of {list(TASKS)}")
    for p in postprocessings:
        if p not in POSTPROCESSORS:
            raise TfmkitError(f"unknown post-processing {p!r}; use some of {list(POSTPROCESSORS)}")
    missing = [k for k in obsm_keys if k not in adata.obsm]
    if missing:
        raise TfmkitError(f"obsm keys {missing} not found; available: {list(adata.obsm)}")
    if not obsm_keys and not baselines:
        raise TfmkitError("nothing to evaluate: pass --obsm keys and/or baselines")
    if n_seeds < 1:
        raise TfmkitError("n_seeds must be >= 1")
    obs = adata.obs
    ctrl = control_mask(obs, control_key or perturbation_key, control_value)
    batches = obs[batch_key].astype(str).to_numpy()
    if len(np.unique(batches)) < 2:
        raise TfmkitError(f"obs[{batch_key!r}] has a single batch; the benchmark needs >= 2 batches")
    for bt in np.unique(batches):
        if not ctrl[batches == bt].any():
            raise TfmkitError(f"batch '{bt}' has no control cells; every batch needs controls "
                              "(drop or merge that batch)")
    labels = obs[perturbation_key].astype(str).to_numpy().copy()
    labels[ctrl] = "__control__"
    genes = {}
    if gene_key is not None:
        if gene_key not in obs.columns:
            raise TfmkitError(f"obs has no column {gene_key!r} (perturbed gene symbol)")
        genes = dict(zip(labels[~ctrl], obs[gene_key].astype(str).to_numpy()[~ctrl]))
    need_counts = bool(baselines) or "inv" in tasks
    counts = _counts(adata, layer) if need_counts else None
    Y = baseline_embedding(counts, f"hvg{n_expr_genes}") if "inv" in tasks else None
    dbs = relationship_databases(databases) if "bmdb" in tasks else {}
    seeds = list(range(n_seeds))
    ctx = _Context(labels, batches, ctrl, genes, Y, dbs, n_null)

    jobs: list[tuple[str, str | None]] = [(n, None) for n in baselines] + [(k, k) for k in obsm_keys]
    steps = len(jobs) * len(postprocessings)
    raw_rows: list[tuple] = []
    cache: dict[str, np.ndarray] = {}

    def embedding_of(name: str, key: str | None) -> np.ndarray:
        if key is not None:
            X = adata.obsm[key]
            X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
            if X.ndim != 2 or not np.isfinite(X).all():
                raise TfmkitError(f"obsm[{key!r}] must be a finite 2-D array")
            return X
        base = shuffle_base if name == RANDOM_LABEL_SHUFFLE else name
        if base not in cache:
            cache[base] = baseline_embedding(counts, base)
        return cache[base]

    from rich.progress import Progress

    with Progress(disable=not progress, transient=False) as bar:
        task_id = bar.add_task("perturbation benchmark", total=steps)
        for name, key in jobs:
            X = embedding_of(name, key)
            for pp in postprocessings:
                bar.update(task_id, description=f"{name} / {pp}")
                Z = postprocess(X, batches, ctrl, pp)
                raw_rows += [(name, pp, *r) for r in
                             _evaluate(Z, ctx, tasks, seeds, shuffle=name == RANDOM_LABEL_SHUFFLE)]
                del Z
                bar.advance(task_id)
    raw = pd.DataFrame(raw_rows, columns=["embedding", "postprocessing", "task", "metric", "seed", "value"])
    out = _aggregate(raw)
    out.attrs["simulated"] = bool(adata.uns.get("simulated", False))
    return out
