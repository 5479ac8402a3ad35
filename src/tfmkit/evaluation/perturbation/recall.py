"""Biological relationship recall of perturbation embeddings (TxFM §B.1 "bmdb").

Given perturbation-level embeddings ``m_p`` (mean of the post-processed cells of the perturbed
gene ``p``): cosine ``c_pq`` for every unordered pair ``p < q``; the null is the set of *all*
pairs, with thresholds ``lo`` = its ``q``-quantile and ``hi`` = its ``(1 - q)``-quantile
(``q = 0.05``). A known pair (two perturbed genes sharing a CORUM complex / pathway set) is
recalled when ``c_pq <= lo`` or ``c_pq >= hi``:

``recall_db = 100 * #{known pairs of db recalled} / #{known pairs of db}``,

reported per database and averaged over databases. Random embeddings recall ``2 q`` (10%) of
known pairs in expectation; a perfect map recalls 100% as long as the known pairs are fewer than
``q`` of all pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

QUANTILE = 0.05


def perturbation_means(X, labels, *, exclude=None) -> pd.DataFrame:
    """Mean embedding per label (rows sorted by label); cells with ``exclude`` True are skipped."""
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    keep = np.ones(len(X), bool) if exclude is None else ~np.asarray(exclude, bool)
    return pd.DataFrame(X[keep]).groupby(labels[keep], sort=True).mean()


def known_pair_matrix(genes: Iterable[str], gene_sets: Mapping[str, Iterable[str]]) -> np.ndarray:
    """Boolean ``(P, P)`` upper-triangular matrix: ``genes[i]`` and ``genes[j]`` (``i < j``)
    belong to at least one common set of ``gene_sets``."""
    index = {g: i for i, g in enumerate(genes)}
    P = len(index)
    M = np.zeros((P, P), bool)
    for members in gene_sets.values():
        idx = sorted({index[g] for g in members if g in index})
        if len(idx) > 1:
            ii = np.asarray(idx)
            M[np.ix_(ii, ii)] = True
    return np.triu(M, k=1)


def pair_recall(means, known: np.ndarray, *, quantile: float = QUANTILE) -> float:
    """Percent of ``known`` pairs whose cosine is in the lower or upper ``quantile`` tail of all
    pairs' cosines (``means`` ``(P, D)``); NaN when there is no known pair."""
    M = np.asarray(means, dtype=np.float64)
    if M.shape[0] < 3:
        raise TfmkitError("relationship recall needs at least three perturbations")
    U = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
    C = U @ U.T  # (P, P)
    iu = np.triu_indices(len(C), k=1)
    allc = C[iu]
    lo, hi = np.quantile(allc, [quantile, 1.0 - quantile])
    kc = C[np.asarray(known, bool)]
    if kc.size == 0:
        return float("nan")
    return 100.0 * float(np.mean((kc <= lo) | (kc >= hi)))


def relationship_recall(means, genes, databases: Mapping[str, Mapping[str, Iterable[str]]], *,
                        quantile: float = QUANTILE) -> dict[str, float]:
    """Recall (percent) per database and their mean under ``"mean"``.

    ``means`` ``(P, D)`` perturbation embeddings in the order of ``genes`` (gene symbols);
    ``databases`` maps a database name to its gene sets. Databases with no known pair among the
    perturbed genes are NaN and left out of the mean.
    """
    genes = [str(g) for g in genes]
    if len(genes) != len(np.asarray(means)):
        raise TfmkitError("means must have one row per perturbed gene")
    out = {db: pair_recall(means, known_pair_matrix(genes, sets), quantile=quantile)
           for db, sets in databases.items()}
    vals = [v for v in out.values() if np.isfinite(v)]
    out["mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


def n_known_pairs(genes, databases: Mapping[str, Mapping[str, Iterable[str]]]) -> dict[str, int]:
    """Number of known pairs among ``genes`` per database (to report next to the recall)."""
    genes = [str(g) for g in genes]
    return {db: int(known_pair_matrix(genes, sets).sum()) for db, sets in databases.items()}
