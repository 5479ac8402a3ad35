"""Gene-gene relationship recall of gene representations (TxFM §B.3; Kraus et al. 2024).

For a gene representation ``E`` ``(G, d)`` (encoder gene tokens, decoder gene weights, PCA
loadings, …):

1. standardise each dimension and project with PCA to ``k`` components (TxFM: ``k = 32`` for
   encoder tokens, ``256`` for decoder weights; capped by ``min(G, d)``) — :func:`postprocess`;
2. cosine similarity ``c_ij = e_i·e_j / (|e_i| |e_j|)`` for the known pairs of a database (two
   genes sharing a CORUM complex / gene set) and for a null of random gene pairs;
3. ``recall = #{known pairs with c ≤ q_0.05(null) or c ≥ q_0.95(null)} / #{known pairs}`` —
   :func:`recall_beyond_null` (EFAAR ``compute_recall``; chance level ``0.10``);
4. repeated over ``n_null_draws = 3`` independent null draws -> mean ± std, per database and
   for the union of all databases (``combined``) — :func:`gene_relationship_recall`.

Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

LOWER, UPPER = 0.05, 0.95
PCA_COMPONENTS = {"encoder": 32, "decoder": 256}


def postprocess(E, n_components: int | None, *, seed: int = 0) -> np.ndarray:
    """Standardise columns of ``E`` ``(G, d)`` then PCA to ``min(n_components, G, d)`` dims
    (``None``: standardise only). Constant columns are dropped."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or len(E) < 3:
        raise TfmkitError(f"a gene representation must be (genes >= 3, dims), got {E.shape}")
    if not np.isfinite(E).all():
        raise TfmkitError("the gene representation contains NaN or infinite values")
    E = E[:, E.std(0) > 0]
    if E.shape[1] == 0:
        raise TfmkitError("every dimension of the gene representation is constant")
    Z = StandardScaler().fit_transform(E)
    if n_components is None:
        return Z
    k = int(min(n_components, Z.shape[0], Z.shape[1]))
    return PCA(k, random_state=seed).fit_transform(Z)


def known_pairs(genes, gene_sets: Mapping[str, list[str]], *, max_pairs: int | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unique index pairs ``(i, j)``, ``i < j``, of ``genes`` that share a set of
    ``gene_sets``; a seeded subsample of ``max_pairs`` when there are more."""
    index = {str(g): i for i, g in enumerate(genes)}
    G = len(genes)
    codes = []
    for members in gene_sets.values():
        idx = np.unique([index[g] for g in members if g in index])
        if len(idx) < 2:
            continue
        ii, jj = np.triu_indices(len(idx), k=1)
        codes.append(idx[ii].astype(np.int64) * G + idx[jj])
    if not codes:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    code = np.unique(np.concatenate(codes))
    if max_pairs is not None and len(code) > max_pairs:
        code = np.sort(np.random.default_rng(seed).choice(code, max_pairs, replace=False))
    return code // G, code % G


def random_pairs(n_genes: int, n_pairs: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random gene pairs ``i ≠ j`` (uniform over ordered pairs, seeded)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n_genes, n_pairs)
    j = (i + rng.integers(1, n_genes, n_pairs)) % n_genes
    return i, j


def pair_cosines(E, i, j, *, chunk_values: int = 2**23) -> np.ndarray:
    """Cosine similarity of rows ``E[i]`` and ``E[j]`` for index arrays ``i``, ``j``, in chunks
    of pairs whose gathered rows hold at most ``chunk_values`` values (64 MB each; a fixed
    million pairs of 256-d rows took 4 GB)."""
    E = np.asarray(E, dtype=np.float64)
    U = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(i))
    chunk = max(1, chunk_values // max(1, U.shape[1]))
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = np.einsum("nd,nd->n", U[i[s:s + chunk]], U[j[s:s + chunk]])
    return out


def recall_beyond_null(known_cos, null_cos, *, lower: float = LOWER, upper: float = UPPER) -> float:
    """Fraction of ``known_cos`` at or beyond the ``lower``/``upper`` quantiles of ``null_cos``
    (``numpy.quantile``, linear interpolation); NaN without known pairs."""
    known_cos = np.asarray(known_cos, dtype=np.float64)
    if known_cos.size == 0:
        return float("nan")
    lo, hi = np.quantile(np.asarray(null_cos, dtype=np.float64), [lower, upper])
    return float(np.mean((known_cos <= lo) | (known_cos >= hi)))


def gene_relationship_recall(representation: pd.DataFrame, databases: Mapping[str, Mapping],
                             *, n_components: int | None = None, n_null_draws: int = 3,
                             n_null_pairs: int = 100_000, max_pairs: int | None = 2_000_000,
                             lower: float = LOWER, upper: float = UPPER, seed: int = 0
                             ) -> pd.DataFrame:
    """Recall per database and ``combined`` for one gene representation.

    ``representation``: DataFrame ``(genes, dims)`` indexed by gene symbol; ``databases``:
    ``{db: {set: genes}}``. Returns a DataFrame with columns ``database, value, std, n_seeds,
    n_pairs`` (``std`` over the ``n_null_draws`` null draws).
    """
    if n_null_draws < 1:
        raise TfmkitError("n_null_draws must be at least 1")
    genes = [str(g) for g in representation.index]
    if len(set(genes)) != len(genes):
        raise TfmkitError("the gene representation has duplicated gene names; aggregate them first")
    E = postprocess(representation.to_numpy(), n_components, seed=seed)
    pairs = {db: known_pairs(genes, sets, max_pairs=max_pairs, seed=seed)
             for db, sets in databases.items()}
    if pairs:
        ci = np.concatenate([p[0] for p in pairs.values()])
        cj = np.concatenate([p[1] for p in pairs.values()])
        code = np.unique(ci * len(genes) + cj)
        pairs["combined"] = (code // len(genes), code % len(genes))
    known_cos = {db: pair_cosines(E, i, j) for db, (i, j) in pairs.items()}
    nulls = [pair_cosines(E, *random_pairs(len(genes), n_null_pairs, seed=seed + 1 + d))
             for d in range(n_null_draws)]
    rows = []
    for db, kc in known_cos.items():
        vals = [recall_beyond_null(kc, nc, lower=lower, upper=upper) for nc in nulls]
        ok = kc.size > 0
        rows.append({"database": db, "value": float(np.mean(vals)) if ok else float("nan"),
                     "std": float(np.std(vals, ddof=1)) if ok and len(vals) > 1 else
                     (0.0 if ok else float("nan")),
                     "n_seeds": n_null_draws, "n_pairs": int(kc.size)})
    return pd.DataFrame(rows)
