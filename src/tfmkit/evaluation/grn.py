"""Zero-shot gene-regulatory-network recovery from gene representations (GPL §2.3, Suppl. F).

For every TF of a TF -> target table (e.g. ChEA 2022, :func:`tfmkit.datasets.genesets.load_tf_targets`)
that is among the scored genes:

1. score every other scored gene ``g`` by its similarity to the TF: the cosine
   ``s_g = e_tf · e_g / (|e_tf| |e_g|)`` of gene embeddings (:func:`cosine_rows`), or, for the
   co-expression baseline, the Pearson correlation of the two genes' expression across cells
   (:func:`pearson_rows`);
2. ``AUROC`` of ``s`` for separating the TF's known targets from the other genes
   (``sklearn.metrics.roc_auc_score``; 0.5 = chance);
3. for a **repressor** (TF roles from :func:`tfmkit.datasets.genesets.load_tf_roles`) whose
   targets are expected to be anti-similar, the inverted metric ``AUROC(-s) = 1 - AUROC(s)``
   (GPL §4 "GRN inference"); activators, dual-role and unannotated TFs keep ``AUROC(s)``.

The summary (:func:`grn_summary`) is the mean over TFs (each regulatory programme weighted
equally): ``grn_auroc`` with repressors inverted and ``grn_auroc_cosine`` without inversion.
TFs with fewer than ``min_targets`` targets or non-targets among the scored genes are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

MIN_TARGETS = 5
PER_TF_COLUMNS = ["tf", "role", "n_targets", "n_genes", "auroc", "auroc_signed"]


def cosine_rows(E, rows) -> np.ndarray:
    """Cosine similarity of rows ``E[rows]`` with every row of ``E`` ``(G, d)`` -> ``(len(rows), G)``."""
    E = np.asarray(E, dtype=np.float64)
    U = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)  # (G, d)
    return U[np.asarray(rows)] @ U.T  # (R, G)


def pearson_rows(X, rows, *, chunk_values: int = 2**24) -> np.ndarray:
    """Pearson correlation across cells of genes ``rows`` with every gene of ``X`` (cells x
    genes, dense) -> ``(len(rows), G)``; NaN for a constant gene. Genes are standardised in
    float64 a block of at most ``chunk_values`` values at a time, so memory stays ``X`` plus
    one block (a float64 copy of ``X`` and its centred and scaled copies took 3 x N x G x 8 bytes)."""
    X = np.asarray(X)
    rows = np.asarray(rows)

    def standardised(cols) -> np.ndarray:
        Z = np.asarray(X[:, cols], dtype=np.float64)  # (N, c)
        Z = Z - Z.mean(0)
        norm = np.sqrt((Z * Z).sum(0))  # (c,)
        with np.errstate(invalid="ignore", divide="ignore"):
            return Z / norm

    Zr = standardised(rows)  # (N, R)
    out = np.empty((len(rows), X.shape[1]))  # (R, G)
    step = max(1, chunk_values // max(1, X.shape[0]))
    for s in range(0, X.shape[1], step):
        out[:, s:s + step] = Zr.T @ standardised(slice(s, s + step))
    return out


def tf_auroc(scores, is_target) -> float:
    """AUROC of ``scores`` for ``is_target`` by the Mann-Whitney identity
    ``(R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)`` with midranks (ties count 1/2; equals
    ``sklearn.metrics.roc_auc_score``); NaN if one class is empty."""
    from scipy.stats import rankdata

    y = np.asarray(is_target, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(np.asarray(scores, dtype=np.float64))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def grn_auroc_per_tf(scores: np.ndarray, tfs: Sequence[str], genes: Sequence[str],
                     tf_targets: Mapping[str, Sequence[str]], *,
                     roles: Mapping[str, str] | None = None,
                     min_targets: int = MIN_TARGETS) -> pd.DataFrame:
    """Per-TF AUROC from a similarity matrix ``scores`` ``(len(tfs), len(genes))`` (row ``i`` =
    similarity of ``tfs[i]`` to every gene). The TF itself is left out of its own ranking.
    Returns :data:`PER_TF_COLUMNS` (``auroc_signed``: inverted for repressors)."""
    roles = dict(roles or {})
    index = {g: j for j, g in enumerate(genes)}
    rows = []
    for i, tf in enumerate(tfs):
        keep = np.ones(len(genes), bool)
        keep[index[tf]] = False
        s = np.asarray(scores[i], dtype=np.float64)
        keep &= np.isfinite(s)
        targets = {index[g] for g in tf_targets.get(tf, ()) if g in index}
        y = np.zeros(len(genes), bool)
        y[list(targets)] = True
        y, s = y[keep], s[keep]
        if y.sum() < min_targets or (~y).sum() < min_targets:
            continue
        auc = tf_auroc(s, y)
        role = roles.get(tf, "unknown")
        rows.append({"tf": tf, "role": role, "n_targets": int(y.sum()), "n_genes": int(y.size),
                     "auroc": auc, "auroc_signed": 1.0 - auc if role == "repressor" else auc})
    return pd.DataFrame(rows, columns=PER_TF_COLUMNS)


def grn_auroc(representation: pd.DataFrame | None, tf_targets: Mapping[str, Sequence[str]], *,
              roles: Mapping[str, str] | None = None, genes: Sequence[str] | None = None,
              expression: pd.DataFrame | None = None, min_targets: int = MIN_TARGETS) -> pd.DataFrame:
    """Per-TF AUROC of one gene representation (``genes x dims`` DataFrame, cosine) or, with
    ``representation=None``, of the co-expression baseline on ``expression`` (``cells x genes``
    DataFrame of lognorm values, Pearson). ``genes`` restricts the scored genes (use the same
    list for a model and its baselines). See the module docstring."""
    src = representation if representation is not None else expression
    if src is None:
        raise TfmkitError("grn_auroc needs a gene representation or an expression matrix")
    names = [str(g) for g in (src.index if representation is not None else src.columns)]
    if len(set(names)) != len(names):
        raise TfmkitError("the gene representation has duplicated gene names; aggregate them first")
    wanted = None if genes is None else set(map(str, genes))
    keep = names if wanted is None else [g for g in names if g in wanted]
    if len(keep) < 2 * min_targets:
        raise TfmkitError(f"only {len(keep)} genes to score; GRN AUROC needs at least {2 * min_targets}")
    kept = set(keep)
    tfs = [t for t in tf_targets if t in kept]
    if not tfs:
        return pd.DataFrame(columns=PER_TF_COLUMNS)
    pos = {g: i for i, g in enumerate(keep)}
    if representation is not None:
        S = cosine_rows(representation.loc[keep].to_numpy(), [pos[t] for t in tfs])  # (T, G)
    else:
        values = expression.to_numpy()  # (N, G_all), not copied for one dtype
        if keep != names:
            col = {g: j for j, g in enumerate(names)}
            values = values[:, [col[g] for g in keep]]  # (N, G)
        S = pearson_rows(values, [pos[t] for t in tfs])  # (T, G)
    return grn_auroc_per_tf(S, tfs, keep, tf_targets, roles=roles, min_targets=min_targets)


def grn_summary(per_tf: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """``{metric: (mean over TFs, std over TFs, number of TFs)}`` for ``grn_auroc`` (repressors
    inverted) and ``grn_auroc_cosine`` (plain similarity)."""
    out = {}
    for metric, col in (("grn_auroc", "auroc_signed"), ("grn_auroc_cosine", "auroc")):
        v = per_tf[col].to_numpy(dtype=np.float64) if len(per_tf) else np.array([])
        out[metric] = (float(v.mean()) if v.size else float("nan"),
                       float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size))
    return out
