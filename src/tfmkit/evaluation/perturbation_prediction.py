"""Perturbation-prediction benchmark (GPL §2.2, §4.6, Supplement E; issue 9 item 3).

**What the model sees at prediction time.** GPL fine-tunes on perturbed cells only and, on a
held-out context, pseudobulks predictions made from that context's control cells (§4.6, E.2:
"1,024+ control cells for pseudobulking"). So, for perturbation ``p`` in evaluation context
``c``, every one of up to ``n_control`` control cells of ``c`` is shown to the model as
``[perturbation token of p, random K-gene subsequence of the control cell]`` (its value of the
target gene hidden), the fine-tuned head predicts that cell's perturbed profile, and the
prediction for ``(c, p)`` is the mean over those cells. No perturbed cell of ``c`` is ever
input. The same rule serves both splits (held-out perturbations: the controls of each context).

Two readouts of the model, over the same control inputs (the same revealed genes per cell in both
passes, so their sampling noise cancels): the *absolute* one above (GPL) and the *delta* one (ours),
the observed control mean plus the model's predicted effect, ``ctrl + mean(pred | token p) -
mean(pred | no token)``, so the model's error in reconstructing the context's unperturbed profile
cancels and only its predicted change is scored. The headline row ``finetuned_model`` is the delta
readout when the model was fine-tuned with ``--train-controls`` (the no-token input was trained
on; the other row is then ``finetuned_model_absolute``), else the absolute one (the other row is
``finetuned_model_delta``, whose no-token input was never trained on). The rule is fixed a priori,
never chosen on the evaluated labels.

**Space.** Observed and predicted profiles are ``log1p(1e4 * counts / library)`` (VCC), over
the genes of the input that are in the model's vocabulary; pseudobulk = mean over cells.

**Metrics** (per perturbation, then averaged; registered in
:mod:`tfmkit.evaluation.metric_registry` under ``perturbation_prediction``):

- ``mae`` / ``mae_hvg``: ``mean_g |y_hat_g - y_g|`` over all genes / the highly variable genes
  (scanpy ``seurat`` flavour on the input's lognorm data, ``min(n_hvg, G/2)`` genes) — GPL's
  ``MAE_k``;
- ``pearson_delta``: Pearson correlation of ``y_hat - ctrl`` and ``y - ctrl`` over genes
  (``ctrl`` = the context's control mean; undefined, NaN, for a constant ``y_hat - ctrl``);
- ``centroid_accuracy``: share of perturbations whose prediction is closer (Euclidean) to its
  own observed pseudobulk than to any other perturbation's in the same context;
- ``de_overlap``: with ``N`` the true DE genes (two-sided Mann-Whitney U of the perturbation's
  cells vs the context's controls, Benjamini-Hochberg q < 0.05), the share of them among the
  ``N`` genes of largest predicted ``|y_hat - ctrl|`` (Overlap@N; NaN when ``N = 0`` or the
  prediction has no change).

**Baselines**: ``control_mean`` (the context's control mean), ``train_mean`` (mean of all
perturbed training cells) and ``linear_gene_embedding`` (Ahlmann-Eltze et al. 2025: ridge
regression, ``alpha`` by leave-one-out CV, of the training pairs' ``pseudobulk - ctrl`` on the
target gene's model gene embedding, added to the evaluation context's control mean) and, on the
context split, ``additive_shift`` (:func:`additive_shift`: the evaluation context's control mean
plus the perturbation's mean observed effect in the training contexts; no model involved — the
strong reference of leave-one-context-out).

A prediction that does not depend on the perturbation (``control_mean``, ``train_mean``, a model
that ignores its token) has ``centroid_accuracy`` exactly ``1/P``: only the perturbation whose
observed pseudobulk lies nearest that one vector is counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfmkit.errors import TfmkitError

TASK = "perturbation_prediction"
MODEL_NAME = "finetuned_model"
METRICS = ("mae", "mae_hvg", "pearson_delta", "centroid_accuracy", "de_overlap")


# ----------------------------------------------------------------------------- pure metrics
def pseudobulk_mae(pred: np.ndarray, obs: np.ndarray, genes: np.ndarray | None = None) -> np.ndarray:
    """``(P,)`` mean absolute error of ``pred`` vs ``obs`` ``(P, G)`` over ``genes`` (bool/int
    index; all genes when ``None``) — GPL §4.6 ``MAE_k``."""
    d = np.abs(np.asarray(pred, np.float64) - np.asarray(obs, np.float64))  # (P, G)
    return (d if genes is None else d[:, genes]).mean(1)


def pearson_delta(pred: np.ndarray, obs: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """``(P,)`` Pearson correlation over genes of ``pred - ctrl`` and ``obs - ctrl`` (NaN where
    either is constant)."""
    a = np.asarray(pred, np.float64) - ctrl  # (P, G)
    b = np.asarray(obs, np.float64) - ctrl  # (P, G)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))  # (P,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * max(a.shape[1], 1), (a * b).sum(1) / den, np.nan)


def centroid_accuracy(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """``(P,)`` 1.0 where prediction ``p`` is nearer (Euclidean) to observed ``p`` than to every
    other observed perturbation (ties count as misses), else 0.0; NaN with one perturbation."""
    pred, obs = np.asarray(pred, np.float64), np.asarray(obs, np.float64)
    if len(obs) < 2:
        return np.full(len(obs), np.nan)
    d = ((pred[:, None, :] - obs[None, :, :]) ** 2).sum(-1)  # (P, P)
    own = np.diag(d).copy()
    np.fill_diagonal(d, np.inf)
    return (own < d.min(1)).astype(np.float64)


def de_genes(cells: np.ndarray, controls: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Indices of genes differentially expressed between ``cells`` and ``controls`` ``(n, G)``
    (two-sided Mann-Whitney U, Benjamini-Hochberg ``q``); empty with fewer than 2 cells a side."""
    from scipy import stats

    if len(cells) < 2 or len(controls) < 2:
        return np.zeros(0, np.int64)
    varies = (np.ptp(cells, 0) > 0) | (np.ptp(controls, 0) > 0) | (cells[0] != controls[0])
    p = np.ones(cells.shape[1])
    idx = np.flatnonzero(varies)
    if idx.size:
        p[idx] = stats.mannwhitneyu(cells[:, idx], controls[:, idx], axis=0).pvalue
    p = np.nan_to_num(p, nan=1.0)
    return np.flatnonzero(stats.false_discovery_control(p) < q)


def de_overlap(pred: np.ndarray, ctrl: np.ndarray, true_de: list[np.ndarray]) -> np.ndarray:
    """``(P,)`` Overlap@N: share of the ``N = len(true_de[p])`` true DE genes among the ``N``
    genes of largest ``|pred_p - ctrl|`` (NaN when ``N = 0`` or the prediction is constant)."""
    out = np.full(len(true_de), np.nan)
    for i, de in enumerate(true_de):
        change = np.abs(np.asarray(pred[i], np.float64) - ctrl)  # (G,)
        if len(de) == 0 or change.max() <= 0:
            continue
        top = np.argsort(-change, kind="stable")[:len(de)]
        out[i] = len(np.intersect1d(top, de)) / len(de)
    return out


# ----------------------------------------------------------------------------- model side
def load_perturbation_model(model):
    """``(TrainedModel, PerturbationTask)`` of a directory fine-tuned with ``perturbation``."""
    from tfmkit import checkpoint as ckpt
    from tfmkit.finetune.run import load_parent
    from tfmkit.tasks import build_task

    bm = load_parent(model)
    if bm.run_config.train.task != "perturbation":
        raise TfmkitError(f"{bm.source} was trained with task {bm.run_config.train.task!r}; run "
                          "`tfmkit finetune perturbation` first and pass OUT/model")
    task = build_task(bm.run_config, bm.vocab.n_genes)
    task.load_state_dict(ckpt.read_checkpoint(bm.source)["criterion"])
    return bm, task.to(bm.device).eval()


@torch.no_grad()
def _mean_prediction(bm, task, store, cells, target: int, batch_size: int, seed: int) -> np.ndarray:
    """``(G,)`` mean predicted profile of ``cells`` given perturbation token ``target``
    (vocabulary gene index; ``-1``: no token)."""
    collate = task.collator(store, targets=int(target))
    out = np.zeros(bm.vocab.n_genes, np.float64)
    for start in range(0, len(cells), batch_size):
        idx = cells[start:start + batch_size]
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
        batch = {k: v.to(bm.device) for k, v in collate(store, idx, gen).items()}
        pred = task.predict(bm.module.encode_cells(batch), batch)  # (B, G)
        out += pred.double().sum(0).cpu().numpy() / len(cells)
    return out


def predict_pseudobulk(bm, task, store, cells, perturbations, *, batch_size: int = 128,
                       seed: int = 0) -> np.ndarray:
    """``(P, G)`` predicted pseudobulk (vocabulary genes) of each perturbation: the mean of the
    predictions from the control cells ``cells`` of ``store`` (see the module doc). A
    perturbation ``None`` gives the prediction without a perturbation token."""
    named = [p for p in perturbations if p is not None]
    gene_idx = dict(zip(named, bm.vocab.gene_index(named).tolist()))
    bad = [p for p, g in gene_idx.items() if g < 0]
    if bad:
        raise TfmkitError(f"perturbation target(s) {bad[:5]} are not in the model's vocabulary")
    bm.module.eval()
    cells = np.asarray(cells, np.int64)
    return np.stack([_mean_prediction(bm, task, store, cells, -1 if p is None else gene_idx[p], batch_size, seed)
                     for p in perturbations])  # (P, G)


# ----------------------------------------------------------------------------- runner
def lognorm(store, cells, genes, target_sum: float = 1e4) -> np.ndarray:
    """``(n, g)`` float32 ``log1p(target_sum * counts / library)`` of ``cells`` on ``genes``."""
    cells = np.asarray(cells, np.int64)
    out = np.zeros((len(cells), len(genes)), np.float32)
    for s in range(0, len(cells), 2048):
        idx = cells[s:s + 2048]
        lib = store.library_sizes[idx][:, None]
        c = store.dense_counts(idx)[:, genes]
        out[s:s + 2048] = np.log1p(target_sum * c / np.maximum(lib, 1e-12) * (lib > 0))
    return out


def group_means(store, codes: np.ndarray, n_groups: int, genes) -> np.ndarray:
    """``(n_groups, g)`` mean lognorm profile of the cells of each code ``0..n_groups-1``."""
    sums = np.zeros((n_groups, len(genes)), np.float64)
    cells = np.flatnonzero(codes >= 0)
    for s in range(0, len(cells), 2048):
        idx = cells[s:s + 2048]
        np.add.at(sums, codes[idx], lognorm(store, idx, genes))
    return sums / np.maximum(np.bincount(codes[cells], minlength=n_groups), 1)[:, None]


def _hvg(X: np.ndarray, n_hvg: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    n = max(1, min(int(n_hvg), X.shape[1] // 2))
    a = ad.AnnData(X.astype(np.float32))
    sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=n)
    return a.var["highly_variable"].to_numpy()


def _linear_baseline(bm, pair_delta, pair_genes, query_genes) -> np.ndarray | None:
    """Ridge of training ``pseudobulk - ctrl`` on the target's gene embedding (Ahlmann-Eltze
    et al. 2025); ``None`` with fewer than 3 training pairs."""
    from sklearn.linear_model import RidgeCV

    import tfmkit

    if len(pair_delta) < 3:
        return None
    bm_tables = bm.module.gene_tables()
    kind = "encoder" if "encoder" in bm_tables else sorted(bm_tables)[0]
    E = tfmkit.gene_embeddings(bm, kind=kind).to_numpy()  # (G_vocab, d)
    fit = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(E[pair_genes], pair_delta)
    return fit.predict(E[query_genes])


def additive_shift(pair_keys: list[tuple[str, str]], pair_delta: np.ndarray, context: str,
                   perturbations: list[str]) -> np.ndarray | None:
    """``(P, g)`` additive context transfer: for each perturbation ``p``, the mean over the
    training contexts ``c' != context`` of ``pseudobulk(c', p) - ctrl(c')`` (``pair_delta`` rows,
    keyed by ``pair_keys = [(c', p)]``). ``None`` when some ``p`` was never trained in another
    context (always so on the held-out-perturbation split, where the baseline is undefined)."""
    rows = {}
    for i, (c, p) in enumerate(pair_keys):
        if c != context:
            rows.setdefault(p, []).append(i)
    if not perturbations or any(p not in rows for p in perturbations):
        return None
    return np.stack([pair_delta[rows[p]].mean(0) for p in perturbations])  # (P, g)


def benchmark_perturbation_prediction(model, adata, *, n_control: int = 512, n_hvg: int = 2000,
                                      seed: int = 0, layer: str | None = None,
                                      library_key: str | None = None,
                                      allow_low_coverage: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate a ``perturbation`` fine-tune on the part of ``adata`` it held out (the split
    recorded in its ``train.task_kwargs``) beside the baselines of the module doc.

    Returns ``(results, per_perturbation)``: the long table (``embedding, task, metric, value``
    = mean over evaluated perturbations, plus ``n_perturbations, split, holdout``) and one row
    per ``context, perturbation, embedding, metric``.
    """
    from tfmkit.finetune.perturbation import contexts_of, resolve_columns
    from tfmkit.finetune.run import target_corpus

    bm, task = load_perturbation_model(model)
    kw = dict(bm.run_config.train.task_kwargs)
    cols = resolve_columns(adata, kw.get("layout", "tfmkit"), kw["perturbation_key"], kw["control_value"],
                           kw.get("context_key"))
    if kw.get("context_key") and cols["context_key"] is None:
        raise TfmkitError(f"the model was fine-tuned with contexts in obs[{kw['context_key']!r}], which the input lacks")
    labels = adata.obs[cols["perturbation_key"]].astype(str).to_numpy()
    ctx = contexts_of(adata, cols)
    control = labels == cols["control_value"]
    store = target_corpus(adata, bm, layer=layer, library_key=library_key, allow_low_coverage=allow_low_coverage)
    genes = store.observable[0]  # vocabulary genes the input measured
    train = np.isin(labels, list(kw["target_index"])) & ~control
    if kw["split"] == "context":
        train &= ctx != kw["holdout"]
    held = set(kw["heldout_perturbations"])
    rng = np.random.default_rng(seed)

    # training pseudobulks: train_mean and (context, perturbation) pairs for the linear baseline
    train_mean = group_means(store, np.where(train, 0, -1), 1, genes)[0]
    ctx_names = sorted(set(ctx))
    ctrl_means = group_means(store, np.where(control, np.searchsorted(ctx_names, ctx), -1), len(ctx_names), genes)
    has_ctrl = np.bincount(np.searchsorted(ctx_names, ctx[control]), minlength=len(ctx_names)) > 0
    pair_keys = sorted({(c, p) for c, p in zip(ctx[train], labels[train]) if has_ctrl[ctx_names.index(c)]})
    pair_code = {k: i for i, k in enumerate(pair_keys)}
    codes = np.array([pair_code.get((c, p), -1) if t else -1 for c, p, t in zip(ctx, labels, train)])
    pair_means = group_means(store, codes, len(pair_keys), genes)
    pair_delta = pair_means - ctrl_means[[ctx_names.index(c) for c, _ in pair_keys]]
    pair_genes = bm.vocab.gene_index([p for _, p in pair_keys])

    rows = []
    for c in kw["eval_contexts"]:
        perts = sorted(p for p in held if ((labels == p) & (ctx == c)).any())
        ctrl_cells = np.flatnonzero(control & (ctx == c))
        if not perts or not len(ctrl_cells):
            continue
        ctrl = ctrl_means[ctx_names.index(c)]
        obs_cells = {p: lognorm(store, np.flatnonzero((labels == p) & (ctx == c)), genes) for p in perts}
        ctrl_X = lognorm(store, ctrl_cells, genes)
        obs = np.stack([obs_cells[p].mean(0) for p in perts])  # (P, g)
        hvg = _hvg(np.concatenate([ctrl_X, *obs_cells.values()]), n_hvg)
        true_de = [de_genes(obs_cells[p], ctrl_X) for p in perts]
        inputs = rng.choice(ctrl_cells, size=min(n_control, len(ctrl_cells)), replace=False)
        model_pred = predict_pseudobulk(bm, task, store, inputs, [*perts, None], seed=seed)[:, genes]
        absolute, delta = model_pred[:-1], ctrl + model_pred[:-1] - model_pred[-1]
        preds = ({MODEL_NAME: delta, f"{MODEL_NAME}_absolute": absolute} if kw.get("train_controls")
                 else {MODEL_NAME: absolute, f"{MODEL_NAME}_delta": delta})
        preds["control_mean"] = np.tile(ctrl, (len(perts), 1))
        preds["train_mean"] = np.tile(train_mean, (len(perts), 1))
        lin = _linear_baseline(bm, pair_delta, pair_genes, bm.vocab.gene_index(perts))
        if lin is not None:
            preds["linear_gene_embedding"] = ctrl + lin
        add = additive_shift(pair_keys, pair_delta, c, perts)
        if add is not None:
            preds["additive_shift"] = ctrl + add
        for name, pred in preds.items():
            values = {"mae": pseudobulk_mae(pred, obs), "mae_hvg": pseudobulk_mae(pred, obs, hvg),
                      "pearson_delta": pearson_delta(pred, obs, ctrl),
                      "centroid_accuracy": centroid_accuracy(pred, obs),
                      "de_overlap": de_overlap(pred, ctrl, true_de)}
            for metric, v in values.items():
                rows += [{"context": c, "perturbation": p, "embedding": name, "metric": metric,
                          "value": float(x), "n_cells": len(obs_cells[p]), "n_control_inputs": len(inputs)}
                         for p, x in zip(perts, v)]
    if not rows:
        raise TfmkitError("nothing to evaluate: the input has no held-out perturbation with cells and "
                          f"controls in the evaluation context(s) {kw['eval_contexts']}; pass the file the "
                          "model was fine-tuned on")
    per = pd.DataFrame(rows)
    res = (per.groupby(["embedding", "metric"], sort=False)["value"]
           .agg(value="mean", n_perturbations="count").reset_index())
    res.insert(1, "task", TASK)
    res["std"], res["n_seeds"] = np.nan, 1
    res["split"] = kw["split"]
    res["holdout"] = kw["holdout"] if isinstance(kw["holdout"], str) else ",".join(kw["holdout"])
    return res, per
