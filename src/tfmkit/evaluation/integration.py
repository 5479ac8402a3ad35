"""Silhouette and batch-integration metrics (TxFM §B.2.1-B.2.2; scIB; encodings paper §4.2).

Silhouette of cell ``i`` for a grouping ``g``: ``s_i = (b_i − a_i) / max(a_i, b_i)`` with
``a_i`` the mean distance to the other cells of its group and ``b_i`` the mean distance to the
nearest other group (``s_i = 0`` for singleton groups, as scikit-learn). Metrics:

- ``asw_label`` (eq. 16): ``(mean_i s_i(label) + 1) / 2`` — scib-metrics ``silhouette_label``.
- ``asw_label_batch`` (eq. 17, ``ASW_l/b``): label silhouette computed *within each batch*
  (``a``, ``b`` only over cells of the same batch), averaged over all cells of batches with ≥ 2
  labels, rescaled ``(· + 1) / 2``. (The numbers in TxFM Table 4 look like scIB's batch ASW
  below; both are reported so neither reading is lost.)
- ``asw_batch``: scIB batch ASW — within each label, ``1 − |s_i(batch)|`` averaged per label,
  then over labels (scib-metrics ``silhouette_batch``).
- ``isolated_label_asw``: mean rescaled label silhouette of the cells of each isolated label,
  averaged over isolated labels (scib-metrics ``isolated_labels``).
- ``ilisi`` / ``clisi`` / ``graph_connectivity``: scib-metrics functions on our exact k-NN.

Why the silhouettes are written here: one chunked pass over the pairwise distances accumulates
``S[i, (label, batch)] = Σ_j d_ij`` per label-batch cell group, from which all four silhouette
metrics follow exactly; scib-metrics would make four passes (plus a JAX compile per shape).
They are tested against ``sklearn.metrics.silhouette_samples`` (to 1e-6) and scib-metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.clustering import (
    _check_k,
    _neighbors_results,
    as_embedding,
    distance_chunks,
    isolated_label_names,
    topk_neighbors,
)


def _codes(values, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values)
    if values.shape != (n,):
        raise TfmkitError(f"{name} must have one entry per cell ({n}), got shape {values.shape}")
    if pd.isna(values).any():
        raise TfmkitError(f"{name} contain missing values; drop those cells or fill the column")
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def distance_summary(X, labels, batches=None, *, n_neighbors: int = 0, chunk_size: int = 2048):
    """One pass over all pairwise Euclidean distances of ``X`` ``(N, D)``.

    Returns ``(S, lab, bat, neighbors)``: ``S`` ``(N, L*B)`` float64 sums of distances from each
    cell to the cells of every (label, batch) group (group index ``label * B + batch``), the label
    and batch codes, and the exact ``n_neighbors``-NN (``NeighborsResults``; ``None`` if 0).
    """
    sums, labs, bat, nn = distance_summaries(X, [labels], batches, n_neighbors=n_neighbors,
                                             chunk_size=chunk_size)
    return sums[0], labs[0], bat, nn


def distance_summaries(X, label_sets, batches=None, *, n_neighbors: int = 0,
                       chunk_size: int = 2048):
    """:func:`distance_summary` for several labelings of the same cells in one distance pass
    (e.g. the true labels and the seeded shuffles of the ``random_label_shuffle`` control).

    Returns ``([S_j], [lab_j], bat, neighbors)`` with one ``S_j`` ``(N, L_j*B)`` and label codes
    per entry of ``label_sets``; each ``S_j`` equals ``distance_summary(X, label_sets[j], ...)[0]``.
    Memory: ``X`` plus one ``(chunk_size, N)`` distance block and the ``(N, k)`` neighbours.
    """
    import torch

    X = as_embedding(X)
    n = X.shape[0]
    bat, _ = _codes(np.zeros(n, int) if batches is None else batches, "batches", n)
    n_b = int(bat.max()) + 1
    labs, onehots = [], []
    for labels in label_sets:
        lab, _ = _codes(labels, "labels", n)
        n_groups = (int(lab.max()) + 1) * n_b
        onehot = torch.zeros((n, n_groups), dtype=torch.float64)  # (N, L*B)
        onehot[torch.arange(n), torch.from_numpy(lab * n_b + bat)] = 1.0
        labs.append(lab)
        onehots.append(onehot)
    sums = [np.empty((n, o.shape[1]), dtype=np.float64) for o in onehots]
    k = _check_k(n, n_neighbors) if n_neighbors else 0
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=X.dtype)
    for s, e, d2 in distance_chunks(X, chunk_size=chunk_size):
        if k:
            idx[s:e], dist[s:e] = topk_neighbors(X, d2, s, k)
        d = d2.double().sqrt_()  # (C, N)
        for S, onehot in zip(sums, onehots):
            S[s:e] = (d @ onehot).numpy()
    return sums, labs, bat, (_neighbors_results(idx, dist) if k else None)


def _silhouette(sums: np.ndarray, sizes: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per-cell silhouette from distance sums to each group ``sums`` ``(n, g)``, group sizes
    ``(g,)`` and each cell's own group ``(n,)``; ``0`` for singletons (scikit-learn)."""
    n = sums.shape[0]
    rows = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[rows, own] / (sizes[own] - 1)
        means = sums / sizes[None, :]
        means[:, sizes == 0] = np.inf
        means[rows, own] = np.inf
        b = means.min(1)
        s = (b - a) / np.maximum(a, b)
    return np.nan_to_num(s)


def _label_silhouette(S, lab, bat) -> np.ndarray:
    n_b = int(bat.max()) + 1
    n_l = int(lab.max()) + 1
    per_label = S.reshape(len(S), n_l, n_b).sum(2)
    return _silhouette(per_label, np.bincount(lab, minlength=n_l).astype(float), lab)


def asw_label_from_summary(S, lab, bat) -> float:
    """``asw_label`` (eq. 16, rescaled to [0, 1]) from :func:`distance_summary` output."""
    return float((np.mean(_label_silhouette(S, lab, bat)) + 1) / 2)


def asw_label_batch_from_summary(S, lab, bat) -> float:
    """``asw_label_batch`` (eq. 17): within-batch label silhouette, rescaled; NaN if no batch
    has two labels."""
    n_b, n_l = int(bat.max()) + 1, int(lab.max()) + 1
    S3 = S.reshape(len(S), n_l, n_b)
    vals = []
    for b in range(n_b):
        cells = np.flatnonzero(bat == b)
        sizes = np.bincount(lab[cells], minlength=n_l).astype(float)
        if (sizes > 0).sum() < 2:
            continue
        vals.append(_silhouette(S3[cells, :, b], sizes, lab[cells]))
    if not vals:
        return float("nan")
    return float((np.mean(np.concatenate(vals)) + 1) / 2)


def asw_batch_from_summary(S, lab, bat) -> float:
    """scIB batch ASW: per label ``mean(1 − |s_i(batch)|)``, averaged over labels that span at
    least two batches (and fewer batches than cells); NaN if there is none."""
    n_b, n_l = int(bat.max()) + 1, int(lab.max()) + 1
    S3 = S.reshape(len(S), n_l, n_b)
    per_label = []
    for lb in range(n_l):
        cells = np.flatnonzero(lab == lb)
        sizes = np.bincount(bat[cells], minlength=n_b).astype(float)
        present = int((sizes > 0).sum())
        if present < 2 or present == len(cells):
            continue
        s = _silhouette(S3[cells, lb, :], sizes, bat[cells])
        per_label.append(np.mean(1 - np.abs(s)))
    return float(np.mean(per_label)) if per_label else float("nan")


def isolated_label_asw_from_summary(S, lab, bat, iso_threshold: int | None = None) -> float:
    """scib-metrics ``isolated_labels``: mean over isolated labels of the mean rescaled label
    silhouette of that label's cells (isolated = in the fewest batches)."""
    sil = (_label_silhouette(S, lab, bat) + 1) / 2
    iso = isolated_label_names(lab, bat, iso_threshold)
    if iso.size == 0:
        return float("nan")
    return float(np.mean([sil[lab == c].mean() for c in iso]))


def silhouette_label(X, labels) -> float:
    """Rescaled label ASW (eq. 16) of embedding ``X`` ``(N, D)``."""
    return asw_label_from_summary(*distance_summary(X, labels)[:3])


def silhouette_label_batch(X, labels, batches) -> float:
    """Within-batch label ASW (eq. 17, ``ASW_l/b``), rescaled to [0, 1]."""
    return asw_label_batch_from_summary(*distance_summary(X, labels, batches)[:3])


def silhouette_batch(X, labels, batches) -> float:
    """scIB batch ASW (``1 − |s(batch)|`` within labels); 1 = batches perfectly mixed."""
    return asw_batch_from_summary(*distance_summary(X, labels, batches)[:3])


def isolated_label_asw(X, labels, batches, iso_threshold: int | None = None) -> float:
    """Isolated-label ASW (scIB), rescaled label silhouette of isolated labels."""
    return isolated_label_asw_from_summary(*distance_summary(X, labels, batches)[:3],
                                           iso_threshold=iso_threshold)


def ilisi(neighbors, batches) -> float:
    """Scaled integration LISI ``(median LISI_batch − 1) / (B − 1)`` (scib-metrics
    ``ilisi_knn``, perplexity k/3); 1 = every neighbourhood mixes all batches evenly."""
    import scib_metrics

    batches = np.asarray(batches)
    if len(np.unique(batches)) < 2:
        raise TfmkitError("iLISI needs at least two batches; pass a batch key with ≥ 2 values")
    return float(scib_metrics.ilisi_knn(neighbors, batches))


def clisi(neighbors, labels) -> float:
    """Scaled cell-type LISI ``(L − median LISI_label) / (L − 1)`` (scib-metrics ``clisi_knn``);
    1 = every neighbourhood holds a single label."""
    import scib_metrics

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise TfmkitError("cLISI needs at least two labels")
    return float(scib_metrics.clisi_knn(neighbors, labels))


def graph_connectivity(neighbors, labels) -> float:
    """Mean over labels of the largest connected component's share of that label's cells in the
    k-NN graph restricted to the label (scib-metrics ``graph_connectivity``)."""
    import scib_metrics

    return float(scib_metrics.graph_connectivity(neighbors, np.asarray(labels)))
