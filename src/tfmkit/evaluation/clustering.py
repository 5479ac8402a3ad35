"""Neighbour graphs and graph clustering for the cell-type benchmark (TxFM §B.2.1; scIB).

Pipeline per embedding (computed once, reused by every graph metric):

1. exact k-nearest neighbours (self included as the first neighbour, Euclidean) —
   :func:`exact_neighbors`, returned as :class:`scib_metrics.nearest_neighbors.NeighborsResults`
   so scib-metrics' LISI / graph-connectivity functions consume it directly;
2. UMAP fuzzy-simplicial-set connectivities (what scanpy and scib-metrics cluster on) —
   :func:`umap_connectivities`;
3. Leiden clustering (igraph, modularity, seeded exactly as scib-metrics) over a 10-value
   resolution sweep ``r ∈ {0.2, 0.4, …, 2.0}`` — :func:`leiden_sweep`;
4. NMI (eq. 14, arithmetic normalisation) and ARI (eq. 15) at the resolution with the highest
   NMI — :func:`nmi_ari_sweep`; isolated-label F1 from the same clusterings —
   :func:`isolated_label_f1`.

Why not call scib-metrics end to end: its default neighbour search (pynndescent) and its
connectivities (``umap.fuzzy_simplicial_set``) are numba functions that JIT-compile for 40-60 s
in every new process on a 2-core machine, and its NMI/ARI sweep does not return the clusterings
that isolated-label F1 needs. The functions here are vectorised numpy/torch re-implementations
that are tested against ``sklearn.neighbors.NearestNeighbors``, ``umap.fuzzy_simplicial_set`` and
``scib_metrics.nmi_ari_cluster_labels_leiden`` to 1e-6 (``tests/test_eval_clustering.py``).
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

RESOLUTIONS = tuple(2 * x / 10 for x in range(1, 11))  # scib-metrics' sweep: 0.2 ... 2.0
_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3
_FLOATMAX = float(np.finfo(np.float32).max)
_DIFF_BLOCK = 2**24  # values per block of neighbour differences in topk_neighbors (64 MB float32)


def _neighbors_results(indices: np.ndarray, distances: np.ndarray):
    from scib_metrics.nearest_neighbors import NeighborsResults

    return NeighborsResults(indices=indices, distances=distances)


def distance_chunks(X, *, chunk_size: int = 2048):
    """Yield ``(start, stop, D2)`` with the squared Euclidean distances ``D2`` ``(C, N)`` (torch)
    of rows ``start:stop`` of ``X`` to all rows, diagonal set to exactly 0. One pass over these
    chunks feeds both the k-NN search and all silhouette sums (``integration.py``)."""
    import torch

    T = torch.from_numpy(X)
    sq = (T * T).sum(1)  # (N,)
    for s in range(0, X.shape[0], chunk_size):
        e = min(s + chunk_size, X.shape[0])
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (T[s:e] @ T.T)  # (C, N)
        d2.clamp_(min=0.0)
        rows = torch.arange(e - s)
        d2[rows, rows + s] = 0.0
        yield s, e, d2


def topk_neighbors(X, d2, start: int, k: int):
    """Indices ``(C, k)`` and exact distances of the ``k`` nearest rows (self first) for one
    chunk of squared distances ``d2`` ``(C, N)`` starting at row ``start``."""
    import torch

    rows = torch.arange(d2.shape[0])
    d2[rows, rows + start] = -1.0  # self is always the first neighbour
    _, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)  # (C, k)
    d2[rows, rows + start] = 0.0
    T = torch.from_numpy(X)
    xs = T[start:start + d2.shape[0]]  # (C, D)
    dist = torch.empty(idx.shape, dtype=T.dtype)  # (C, k)
    # exact distances from the differences, in row blocks of <= _DIFF_BLOCK values (a (C, k, D)
    # difference tensor would be 15 GB for 2,048 cells x 90 neighbours x 20k genes), gathered
    # and subtracted in place by torch (3x faster than numpy temporaries on wide inputs)
    step = max(1, _DIFF_BLOCK // max(1, k * X.shape[1]))
    for r in range(0, len(idx), step):
        e = min(r + step, len(idx))
        diff = T[idx[r:e].reshape(-1)].view(e - r, k, X.shape[1])  # (c, k, D)
        diff.sub_(xs[r:e, None, :])
        dist[r:e] = torch.linalg.vector_norm(diff, dim=-1)
    dist[:, 0] = 0.0
    idx, dist = idx.numpy(), dist.numpy()
    return idx.astype(np.int64), dist


def exact_neighbors(X, n_neighbors: int, *, chunk_size: int = 2048):
    """Exact Euclidean k-NN of every row of ``X`` ``(N, D)`` among all rows, self first.

    Returns a ``NeighborsResults`` with ``indices`` ``(N, k)`` int64 and ``distances`` ``(N, k)``
    (float64 for float64 input, else float32), rows sorted by distance; ``k`` is capped at ``N``.
    Candidates come from ``|x|² + |y|² − 2 x·y`` (``torch.topk``); the returned distances are
    recomputed exactly from the differences.
    """
    X = as_embedding(X)
    n = X.shape[0]
    k = _check_k(n, n_neighbors)
    idx_out = np.empty((n, k), dtype=np.int64)
    dist_out = np.empty((n, k), dtype=X.dtype)
    for s, e, d2 in distance_chunks(X, chunk_size=chunk_size):
        idx_out[s:e], dist_out[s:e] = topk_neighbors(X, d2, s, k)
    return _neighbors_results(idx_out, dist_out)


def _check_k(n: int, n_neighbors: int) -> int:
    if n < 3:
        raise TfmkitError(f"need at least 3 cells for a neighbour graph, got {n}")
    return min(int(n_neighbors), n)


def as_embedding(X) -> np.ndarray:
    """``X`` as a C-contiguous finite 2-D float array (float64 kept, everything else float32)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise TfmkitError(f"an embedding must be a 2-D (cells, dims) array, got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float64 if X.dtype == np.float64 else np.float32)
    if not np.isfinite(X).all():
        raise TfmkitError("the embedding contains NaN or infinite values; fix or drop those cells")
    return X


def _smooth_knn_dist(distances: np.ndarray, k: float, *, n_iter: int = 64,
                     local_connectivity: float = 1.0, bandwidth: float = 1.0):
    """Vectorised ``umap.umap_.smooth_knn_dist``: per-row ``sigma`` (binary search so that
    ``Σ_j exp(−(d_ij − ρ_i)/σ_i) = log2(k)``) and ``rho`` (distance to the nearest non-self)."""
    d = distances.astype(np.float32)
    n = d.shape[0]
    target = np.log2(k) * bandwidth
    n_nonzero = (d > 0).sum(1)
    n_zero = d.shape[1] - n_nonzero
    index = int(np.floor(local_connectivity))
    interp = local_connectivity - index
    rho = np.zeros(n, dtype=np.float32)
    enough = n_nonzero >= local_connectivity
    rows = np.flatnonzero(enough)
    if index > 0:
        pos = np.minimum(n_zero[rows] + index - 1, d.shape[1] - 1)
        rho[rows] = d[rows, pos]
        if interp > _SMOOTH_K_TOLERANCE:
            nxt = np.minimum(pos + 1, d.shape[1] - 1)
            rho[rows] += np.float32(interp) * (d[rows, nxt] - d[rows, pos])
    else:
        rho[rows] = np.float32(interp) * d[rows, np.minimum(n_zero[rows], d.shape[1] - 1)]
    some = (~enough) & (n_nonzero > 0)
    rho[some] = d[some].max(1)

    diff = (d[:, 1:] - rho[:, None]).astype(np.float64)  # float32 subtraction, as umap
    pos_mask = diff > 0
    lo = np.zeros(n)
    hi = np.full(n, _FLOATMAX)
    mid = np.ones(n)
    active = np.ones(n, dtype=bool)
    for _ in range(n_iter):
        if not active.any():
            break
        a = np.flatnonzero(active)
        # exp of a non-positive exponent only (masked entries contribute 1; no overflow)
        terms = np.where(pos_mask[a], np.exp(-np.maximum(diff[a], 0.0) / mid[a, None]), 1.0)
        psum = np.cumsum(terms, axis=1)[:, -1]  # sequential sum, as umap's loop
        conv = np.abs(psum - target) < _SMOOTH_K_TOLERANCE
        go = ~conv
        up = go & (psum > target)
        down = go & ~(psum > target)
        ia, ib = a[up], a[down]
        hi[ia] = mid[ia]
        mid[ia] = (lo[ia] + hi[ia]) / 2.0
        lo[ib] = mid[ib]
        inf_hi = hi[ib] >= _FLOATMAX
        mid[ib[inf_hi]] *= 2
        ic = ib[~inf_hi]
        mid[ic] = (lo[ic] + hi[ic]) / 2.0
        active[a[conv]] = False
    sigma = mid.astype(np.float32)
    row_mean = d.mean(1)
    floor = np.where(rho > 0, _MIN_K_DIST_SCALE * row_mean, _MIN_K_DIST_SCALE * d.mean())
    sigma = np.where(sigma < floor, floor, sigma).astype(np.float32)
    return sigma, rho


def umap_connectivities(neighbors, *, local_connectivity: float = 1.0) -> sp.csr_matrix:
    """UMAP fuzzy-simplicial-set connectivities ``(N, N)`` from a k-NN result (as scanpy/scib).

    ``w_ij = exp(−max(0, d_ij − ρ_i) / σ_i)`` for the k neighbours ``j`` of ``i`` (0 for self),
    then the fuzzy union ``W + Wᵀ − W ∘ Wᵀ``. Equal to
    ``umap.umap_.fuzzy_simplicial_set(..., knn_indices, knn_dists)[0]`` without numba.
    """
    idx = np.asarray(neighbors.indices)
    d = np.asarray(neighbors.distances, dtype=np.float32)
    n, k = idx.shape
    sigma, rho = _smooth_knn_dist(d, float(k), local_connectivity=local_connectivity)
    delta = d - rho[:, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        vals = np.exp(-(delta / sigma[:, None])).astype(np.float32)
    vals = np.where((delta <= 0) | (sigma[:, None] == 0), np.float32(1.0), vals)
    vals[idx == np.arange(n)[:, None]] = 0.0
    keep = idx >= 0
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    W = sp.coo_matrix((vals[keep], (rows[keep], idx[keep])), shape=(n, n))
    W.eliminate_zeros()
    Wt = W.transpose()
    out = W + Wt - W.multiply(Wt)
    out.eliminate_zeros()
    return out.tocsr()


def _igraph(connectivities):
    import igraph

    g = igraph.Graph.Weighted_Adjacency(connectivities, mode="directed")
    g.to_undirected(mode="each")
    return g


def _leiden_on(graph, resolution: float, seed: int) -> np.ndarray:
    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    part = graph.community_leiden(objective_function="modularity", weights="weight",
                                  resolution=resolution)
    return np.asarray(part.membership)


def leiden(connectivities, resolution: float, *, seed: int = 42) -> np.ndarray:
    """Leiden clusters (igraph, modularity objective, edge weights) of a connectivity graph,
    seeded exactly as ``scib_metrics`` (so results match it for the same graph)."""
    return _leiden_on(_igraph(connectivities), resolution, seed)


def leiden_sweep(connectivities, resolutions=RESOLUTIONS, *, seed: int = 42) -> list[np.ndarray]:
    """One Leiden clustering per resolution (the 10-value scib-metrics sweep by default). The
    igraph graph is built once for the sweep (building it took half the sweep's time); each
    resolution re-seeds the RNG, so every clustering equals :func:`leiden` at that resolution."""
    graph = _igraph(connectivities)
    return [_leiden_on(graph, r, seed) for r in resolutions]


def nmi_ari_sweep(labels, clusterings) -> dict[str, float]:
    """NMI (eq. 14) and ARI (eq. 15) of the clustering with maximal NMI among ``clusterings``.

    ``NMI = 2 I(C, L) / (H(C) + H(L))``; ``ARI = (RI − E[RI]) / (max RI − E[RI])``
    (scikit-learn). Returns ``{"nmi", "ari", "best_index"}``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    if not clusterings:
        raise TfmkitError("nmi_ari_sweep needs at least one clustering")
    scores = [(normalized_mutual_info_score(labels, c, average_method="arithmetic"),
               adjusted_rand_score(labels, c)) for c in clusterings]
    best = int(np.argmax([s[0] for s in scores]))
    return {"nmi": float(scores[best][0]), "ari": float(scores[best][1]), "best_index": best}


def isolated_label_names(labels, batches, iso_threshold: int | None = None) -> np.ndarray:
    """Labels present in at most ``iso_threshold`` batches (default: the minimum number of
    batches any label is present in) — the scIB / scib-metrics definition."""
    df = pd.DataFrame({"label": np.asarray(labels), "batch": np.asarray(batches)}).drop_duplicates()
    per_label = df.groupby("label", observed=True)["batch"].count()
    thr = per_label.min() if iso_threshold is None else iso_threshold
    return np.asarray(per_label.index[per_label <= thr].tolist())


def isolated_label_f1(labels, batches, clusterings, *, iso_threshold: int | None = None) -> float:
    """Isolated-label F1 (scIB ``isolated_labels_f1``): for each isolated label ``l``, the best
    ``F1(label == l, cluster == c) = 2 n_lc / (n_l + n_c)`` over clusters ``c`` and the
    clusterings of the resolution sweep; mean over isolated labels."""
    labels = np.asarray(labels)
    iso = isolated_label_names(labels, batches, iso_threshold)
    if iso.size == 0:
        return float("nan")
    lab_codes, lab_names = pd.factorize(labels)
    scores = []
    for name in iso:
        li = int(np.flatnonzero(np.asarray(lab_names) == name)[0])
        is_l = lab_codes == li
        n_l = is_l.sum()
        best = 0.0
        for c in clusterings:
            c = np.asarray(c)
            n_c = np.bincount(c)
            n_lc = np.bincount(c[is_l], minlength=len(n_c))
            best = max(best, float(np.max(2.0 * n_lc / (n_l + n_c))))
        scores.append(best)
    return float(np.mean(scores))
