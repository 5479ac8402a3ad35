"""Perturbation separation: linear probe on unseen batches and kNN retrieval across batches
(TxFM §B.1 "Linear Separability" and "Latent Space Organization").

Both tasks use the perturbed cells only (controls are not a class) and report top-1 and top-5
accuracy in percent; the task score is their mean.

* :func:`linear_probe` fits a linear classifier on the cells of the training batches and scores
  the cells of the held-out batches: ``top-k = mean_n 1[y_n in the k highest scores of x_n]``.
  ``method="ridge"`` (default) is the least-squares one-vs-rest classifier (sklearn's
  ``RidgeClassifier`` decision function, closed form via :class:`BatchRidge` so several splits
  share one Gram matrix; control cells are fit as one extra, never-scored class); ``method="logistic"`` is multinomial ``LogisticRegression`` (slow for
  thousands of features and hundreds of classes).
* :func:`knn_retrieval` takes query cells from one half of the batches and retrieves their
  nearest neighbours (cosine) among the perturbed cells of the other half:
  ``top-k = mean_q 1[y_q in labels of the k nearest references]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.ridge import BatchRidge, batch_groups, group_codes


def topk_accuracy(scores: np.ndarray, y: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Percent of rows whose true column ``y`` is among the ``k`` highest ``scores``."""
    scores = np.asarray(scores)
    y = np.asarray(y)
    true = scores[np.arange(len(y)), y][:, None]
    # rank = number of classes strictly better than the true one (ties count in its favour)
    rank = (scores > true).sum(axis=1)
    return {k: 100.0 * float(np.mean(rank < k)) if len(y) else float("nan") for k in ks}


def held_out_batches(batches, seed: int, frac: float = 0.25) -> list:
    """Batches held out for ``seed``: ``max(1, round(frac * B))`` consecutive batches of a fixed
    random order, rotating with the seed so that successive seeds test different batches."""
    levels = list(np.unique(np.asarray(batches)))
    if len(levels) < 2:
        raise TfmkitError("the linear probe on unseen batches needs at least two batches")
    n_test = min(len(levels) - 1, max(1, int(round(frac * len(levels)))))
    order = [levels[i] for i in np.random.default_rng(0).permutation(len(levels))]
    return [order[(seed * n_test + j) % len(levels)] for j in range(n_test)]


def linear_probe(X, labels, batches, *, test_batches: Sequence | Sequence[Sequence],
                 is_control=None, ks: Sequence[int] = (1, 5), method: str = "ridge",
                 rel_alpha: float = 1e-2, ridge: BatchRidge | None = None):
    """Top-k accuracy (percent) of a linear probe trained on batches not in ``test_batches``.

    ``X`` ``(N, D)``, ``labels`` ``(N,)``, ``batches`` ``(N,)``; cells flagged by
    ``is_control`` are neither trained on nor scored. ``test_batches`` is one list of held-out
    batches, or a list of such lists (then a list of results is returned and the ridge Gram
    matrices are shared). Test cells whose label never occurs in training are left out (no
    probe can predict them). ``ridge`` may pass statistics precomputed on the same ``X`` with
    ``group_codes(batches, is_control)``.
    """
    X = np.asarray(X, dtype=np.float32)
    labels, batches = np.asarray(labels), np.asarray(batches)
    if not (len(X) == len(labels) == len(batches)):
        raise TfmkitError("X, labels and batches must have one entry per cell")
    ctrl = np.zeros(len(X), bool) if is_control is None else np.asarray(is_control, bool)
    many = len(test_batches) > 0 and not np.isscalar(test_batches[0]) and not isinstance(test_batches[0], str)
    splits = list(test_batches) if many else [test_batches]
    classes, y = np.unique(labels[~ctrl], return_inverse=True)
    code = np.full(len(X), -1)
    code[~ctrl] = y
    if method == "ridge":
        ridge = ridge if ridge is not None else BatchRidge(X, group_codes(batches, ctrl), rel_alpha=rel_alpha)
        # controls form one extra class: the fit then uses the same training cells (and the
        # same factorisation) as the invertibility decoder; that column is never scored
        cols = np.where(ctrl, len(classes), code)
        onehot = sp.csr_matrix((np.ones(len(X), np.float32), (np.arange(len(X)), cols)),
                               shape=(len(X), len(classes) + 1))
        ridge.add_target("_probe", onehot)
    out = []
    for held in splits:
        test = np.isin(batches, list(held)) & ~ctrl
        train = ~np.isin(batches, list(held)) & ~ctrl
        if not test.any() or not train.any():
            raise TfmkitError(f"held-out batches {list(held)!r} must leave perturbed cells on both sides")
        seen = np.zeros(len(classes), bool)
        seen[np.unique(code[train])] = True
        rows = np.flatnonzero(test & (code >= 0) & seen[np.maximum(code, 0)])
        if method == "ridge":
            train_b = [b for b in np.unique(batches) if b not in set(held)]
            scores = ridge.predict("_probe", batch_groups(batches, train_b), rows)[:, :-1]
            scores[:, ~seen] = -np.inf  # (n_test, C)
        elif method == "logistic":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(max_iter=300).fit(X[train], code[train])
            scores = np.full((len(rows), len(classes)), -np.inf, np.float32)
            scores[:, clf.classes_] = clf.predict_log_proba(X[rows])
        else:
            raise TfmkitError(f"unknown probe method {method!r}; use 'ridge' or 'logistic'")
        out.append(topk_accuracy(scores, code[rows], ks))
    return out if many else out[0]


def split_batches_in_half(batches, seed: int) -> tuple[list, list]:
    """Random disjoint (query, reference) halves of the batches for ``seed``."""
    levels = list(np.unique(np.asarray(batches)))
    if len(levels) < 2:
        raise TfmkitError("kNN retrieval across batches needs at least two batches")
    perm = [levels[i] for i in np.random.default_rng(seed).permutation(len(levels))]
    half = len(levels) // 2
    return perm[:half], perm[half:]


def knn_retrieval(X, labels, batches, *, query_batches: Sequence | Sequence[Sequence],
                  ks: Sequence[int] = (1, 5), max_queries: int | None = 1000, seed: int | Sequence[int] = 0):
    """Top-k retrieval accuracy (percent) of queries from ``query_batches`` against the cells of
    all other batches, cosine similarity; at most ``max_queries`` queries (seeded sample).

    ``query_batches`` may be a list of such lists (one per seed; ``seed`` then a list too), in
    which case a list of results is returned and the rows are normalised once.
    """
    X = np.asarray(X, dtype=np.float32)
    labels, batches = np.asarray(labels), np.asarray(batches)
    if not (len(X) == len(labels) == len(batches)):
        raise TfmkitError("X, labels and batches must have one entry per cell")
    many = len(query_batches) > 0 and not np.isscalar(query_batches[0]) and not isinstance(query_batches[0], str)
    splits = list(query_batches) if many else [query_batches]
    seeds = list(seed) if many and not np.isscalar(seed) else [seed] * len(splits)
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out = []
    for split, s in zip(splits, seeds):
        qmask = np.isin(batches, list(split))
        q, r = np.flatnonzero(qmask), np.flatnonzero(~qmask)
        if len(q) == 0 or len(r) == 0:
            raise TfmkitError("kNN retrieval needs cells in both the query and the reference batches")
        if max_queries is not None and len(q) > max_queries:
            q = np.sort(np.random.default_rng(s).choice(q, max_queries, replace=False))
        kmax = min(max(ks), len(r))
        hits = {k: 0 for k in ks}
        ref, ref_labels = unit[r], labels[r]  # (R, D)
        for start in range(0, len(q), 512):
            qi = q[start:start + 512]
            sim = unit[qi] @ ref.T  # (q, R)
            top = np.argpartition(-sim, kmax - 1, axis=1)[:, :kmax]
            order = np.take_along_axis(sim, top, axis=1).argsort(axis=1)[:, ::-1]
            nn_labels = ref_labels[np.take_along_axis(top, order, axis=1)]  # (q, kmax)
            match = nn_labels == labels[qi][:, None]
            for k in ks:
                hits[k] += int(match[:, :k].any(axis=1).sum())
        out.append({k: 100.0 * hits[k] / len(q) for k in ks})
    return out if many else out[0]
