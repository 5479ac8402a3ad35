"""Batch mixing: iLISI over batches (TxFM §B.1 "Batch Effect Correction").

iLISI of cell ``n`` is the inverse Simpson index of the batch labels in its perplexity-weighted
``k``-neighbourhood, ``1 / sum_b p_{n,b}^2`` (Korsunsky et al. 2019); the score is the median
over cells rescaled to ``[0, 1]`` by ``(iLISI - 1) / (n_batches - 1)`` (Luecken et al. 2022).
The Simpson index itself is the maintained ``scib_metrics.ilisi_knn``; this module only builds
the neighbour graph (exact, sklearn) on at most ``max_cells`` (3,000) cells drawn per batch in proportion
(seeded) so that 5,000-dimensional count baselines stay affordable.
"""

from __future__ import annotations

import numpy as np

from tfmkit.errors import TfmkitError


def stratified_subsample(groups, max_cells: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_cells`` cells, each group kept in proportion (seeded)."""
    groups = np.asarray(groups)
    n = len(groups)
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = max(1, int(round(len(idx) * max_cells / n)))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def ilisi(X, batches, *, n_neighbors: int = 90, max_cells: int | None = 3000, seed: int = 0) -> float:
    """Scaled iLISI over ``batches`` in percent (100 = perfectly mixed, 0 = fully separated).

    ``X`` ``(N, D)`` embedding, ``batches`` ``(N,)``. Neighbours: exact Euclidean ``k``-NN
    (``k = n_neighbors``, perplexity ``k / 3`` as in scib-metrics), self excluded.
    """
    from scib_metrics import ilisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float32)
    batches = np.asarray(batches)
    if len(batches) != len(X):
        raise TfmkitError(f"batches has {len(batches)} entries for {len(X)} cells")
    if len(np.unique(batches)) < 2:
        raise TfmkitError("iLISI needs at least two batches")
    idx = stratified_subsample(batches, max_cells, seed)
    Xs, bs = X[idx], batches[idx]
    k = min(n_neighbors, len(Xs) - 1)
    dist, nn = NearestNeighbors(n_neighbors=k + 1).fit(Xs).kneighbors(Xs)
    res = NeighborsResults(indices=nn[:, 1:], distances=dist[:, 1:])
    return 100.0 * float(ilisi_knn(res, bs))
