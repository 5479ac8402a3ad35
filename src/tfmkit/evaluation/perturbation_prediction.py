"""Perturbation-prediction benchmark (GPL §2.2, §4.6, Supplement E; issue 9 item 3).

**What the model sees at prediction time.** GPL fine-tunes on perturbed cells only and, on a
held-out context, pseudobulks predictions made from that context's control cells (§4.6, E.2:
"1,024+ control cells for pseudobulking"). So, for perturbation ``p`` in evaluation context
``c``, every one of up to ``n_control`` control cells of ``c`` is shown to the model as
``[perturbation token of p, random K-gene subsequence of the control cell]`` (its value of the
target gene hidden), the fine-tuned head predicts that cell's perturbed profile, and the
prediction for ``(c, p)`` is the mean over those cells. No perturbed cell of ``c`` is ever
input. The same rule serves both splits (held-out perturbations: the controls of each context).

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
target gene's model gene embedding, added to the evaluation context's control mean).
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
def predict_pseudobulk(bm, task, controls, perturbations, *, batch_size: int = 128,
                       seed: int = 0) -> np.ndarray:
    """``(P, G)`` predicted pseudobulk (vocabulary genes) of each perturbation, from the control
    cells of one context (a count store, see the module doc)."""
    gene_idx = bm.vocab.gene_index(list(perturbations))
    if (gene_idx < 0).any():
        bad = [p for p, g in zip(perturbations, gene_idx) if g < 0][:5]
        raise TfmkitError(f"perturbation target(s) {bad} are not in the model's vocabulary")
    from tfmkit.data import keys as K

    bm.module.eval()
    out = np.zeros((len(gene_idx), bm.vocab.n_genes), np.float64)  # (P, G)
    n = controls.n_cells
    for i, g in enumerate(gene_idx):
        collate = task.collator(controls, targets=int(g))
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
            batch = {k: v.to(bm.device) for k, v in collate(controls, idx, gen).items()}
            pred = task.predict(bm.module.encode_cells(batch), batch[K.OBSERVABLE])  # (B, G)
            out[i] += pred.double().sum(0).cpu().numpy() / n
    return out
