"""Zero-shot kNN label transfer with stratified k-fold cross-validation (SPEC §6).

Every cell is predicted once by a ``k = 10`` nearest-neighbour classifier (scikit-learn) fit
on the other folds of a seeded :class:`~sklearn.model_selection.StratifiedKFold`. From the
one set of predictions come both summaries the project reports:

- per fold (``pooled=False``, the demo): ``value`` = mean over folds of the fold's accuracy /
  macro F1, ``std`` over folds (identical to ``sklearn.model_selection.cross_validate``);
- pooled (``pooled=True``, the ablation): ``accuracy`` = #correct / n and ``macro_f1`` of all
  predictions together (identical to ``cross_val_predict``), so ``n`` cells can enter a
  two-proportion test.

:func:`benchmark_knn` is the registered runner: it takes arrays (embedding the cells with a
model is the caller's job) and returns the long results table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

K_NEIGHBORS = 10
N_FOLDS = 5


def knn_cv_scores(X, labels, *, k: int = K_NEIGHBORS, folds: int = N_FOLDS, seed: int = 0) -> dict:
    """kNN cross-validated predictions of ``labels`` ``(N,)`` from ``X`` ``(N, D)``.

    Returns ``{"accuracy", "macro_f1"}`` (pooled over all cells), ``"fold_accuracy"`` and
    ``"fold_macro_f1"`` (arrays, one value per fold) and ``"n"`` (cells)."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels).astype(str)
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(y):
        raise TfmkitError(f"kNN needs a (cells, dims) embedding and one label per cell; got "
                          f"{X.shape} and {len(y)} labels")
    counts = np.unique(y, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < folds:
        raise TfmkitError(f"kNN {folds}-fold CV needs at least two labels with ≥ {folds} cells "
                          "each; drop the rare classes first")
    pred = np.empty(len(y), dtype=y.dtype)
    fold_acc, fold_f1 = [], []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        pred[test] = KNeighborsClassifier(n_neighbors=k).fit(X[train], y[train]).predict(X[test])
        fold_acc.append(accuracy_score(y[test], pred[test]))
        fold_f1.append(f1_score(y[test], pred[test], average="macro"))
    return {"accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")),
            "fold_accuracy": np.asarray(fold_acc), "fold_macro_f1": np.asarray(fold_f1), "n": len(y)}


def benchmark_knn(embeddings: Mapping[str, np.ndarray], labels, *, k: int = K_NEIGHBORS,
                  folds: int = N_FOLDS, seed: int = 0, pooled: bool = False,
                  shuffle_control: str | None = None) -> pd.DataFrame:
    """kNN label transfer of every embedding ``{name: (N, D) array}`` against ``labels`` ``(N,)``.

    ``shuffle_control``: name of one of the embeddings that is also scored against seeded
    permuted labels and reported as ``random_label_shuffle`` (the chance level). Rows: task
    ``knn_<folds>fold``, metrics ``accuracy`` and ``macro_f1``; ``value`` / ``std`` per the
    module doc, ``n`` = cells scored.
    """
    from tfmkit.evaluation.baselines import RANDOM_LABEL_SHUFFLE, shuffled_labels

    if shuffle_control is not None and shuffle_control not in embeddings:
        raise TfmkitError(f"shuffle control {shuffle_control!r} is not one of the embeddings "
                          f"{list(embeddings)}")
    runs = [(name, X, labels) for name, X in embeddings.items()]
    if shuffle_control is not None:
        runs.append((RANDOM_LABEL_SHUFFLE, embeddings[shuffle_control], shuffled_labels(labels, seed)))
    rows = []
    for name, X, y in runs:
        res = knn_cv_scores(X, y, k=k, folds=folds, seed=seed)
        for metric in ("accuracy", "macro_f1"):
            per_fold = res[f"fold_{metric}"]
            rows.append({"embedding": name, "task": f"knn_{folds}fold", "metric": metric,
                         "value": res[metric] if pooled else float(np.mean(per_fold)),
                         "std": float(np.std(per_fold)), "n_seeds": 1, "n": res["n"]})
    return pd.DataFrame(rows, columns=["embedding", "task", "metric", "value", "std", "n_seeds", "n"])
