"""Pretraining quality of a masked reconstruction model (GPL §4.5, Suppl. D; TxFM eq. 2).

Per held-out cell, with predictions ``ŷ`` (logits: pre-activation, so that the output
activation's flat zero region does not create artificial ties), observed counts ``k`` and the
set ``M`` of genes to evaluate (observable genes, or only the masked ones):

- **held-out Poisson loss** (TxFM eq. 2): ``(1/|M|) Σ_{i∈M} exp(x̂_i) − x̂_i exp(x_i)``
  with ``x̂`` the post-activation predictions and ``x`` the lognorm targets
  (:func:`tfmkit.objectives.poisson_nll`).
- **full-transcriptome Spearman**: Pearson correlation of the midranks (average ranks for
  ties, as ``scipy.stats.spearmanr``) of ``ŷ_M`` and ``k_M``; the undetected genes form one
  tied block. NaN when either side is constant.
- **binary correctness**: with ``N = #{i ∈ M : k_i > 0}``, the fraction of expressed genes
  among the ``N`` genes of ``M`` with the highest ``ŷ`` (ties broken by gene order); NaN when
  ``N = 0``.

All functions are vectorised over cells; rows are cells, columns genes.
"""

from __future__ import annotations

import numpy as np

from tfmkit.errors import TfmkitError


def _check(a, b, mask):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise TfmkitError(f"predictions and observations must be (cells, genes) arrays of one "
                          f"shape, got {a.shape} and {b.shape}")
    m = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != a.shape:
        raise TfmkitError(f"mask shape {m.shape} does not match {a.shape}")
    return a, b, m


def _midranks(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise average ranks (1-based) of the entries of ``x`` inside ``mask``; entries outside
    are pushed past the end, so the ranks inside equal ``rankdata`` of the subset."""
    from scipy.stats import rankdata

    return rankdata(np.where(mask, x, np.inf), axis=1, method="average")


def spearman_per_cell(pred, observed, mask=None) -> np.ndarray:
    """Spearman correlation per row between ``pred`` and ``observed`` ``(N, G)`` over the
    entries in ``mask`` (midrank ties; equal to ``scipy.stats.spearmanr`` on each row's
    subset). Returns ``(N,)``; NaN for rows with < 2 entries or a constant side."""
    p, o, m = _check(pred, observed, mask)
    rp, ro = _midranks(p, m), _midranks(o, m)
    n = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.where(m, rp, 0).sum(1) / n
        mo = np.where(m, ro, 0).sum(1) / n
        dp = np.where(m, rp - mp[:, None], 0.0)
        do = np.where(m, ro - mo[:, None], 0.0)
        r = (dp * do).sum(1) / np.sqrt((dp * dp).sum(1) * (do * do).sum(1))
    r[(n < 2) | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def binary_correctness_per_cell(pred, counts, mask=None) -> np.ndarray:
    """Per row: fraction of expressed genes (``counts > 0`` inside ``mask``) that are among the
    ``N`` highest-``pred`` genes of ``mask``, ``N`` = number expressed. ``(N_cells,)``."""
    p, c, m = _check(pred, counts, mask)
    expressed = (c > 0) & m
    n_expr = expressed.sum(1)
    order = np.argsort(-np.where(m, p, -np.inf), axis=1, kind="stable")  # best first
    rank = np.empty_like(order)
    rows = np.arange(p.shape[0])[:, None]
    rank[rows, order] = np.arange(p.shape[1])[None, :]
    in_top = rank < n_expr[:, None]
    hits = (in_top & expressed).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_expr > 0, hits / n_expr, np.nan)


def poisson_loss_per_cell(pred, target, mask=None) -> np.ndarray:
    """Held-out Poisson loss per cell (TxFM eq. 2) via :func:`tfmkit.objectives.poisson_nll`;
    ``pred`` post-activation log1p predictions, ``target`` lognorm values."""
    import torch

    from tfmkit.objectives import poisson_nll

    p, t, m = _check(pred, target, mask)
    out = poisson_nll(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m))
    return out.numpy()


def reconstruction_metrics(rec: dict) -> dict[str, np.ndarray]:
    """Per-cell metrics from a :func:`tfmkit.inference.reconstruct` result.

    Keys: ``poisson_loss`` (observable genes), ``spearman`` / ``binary_correctness`` over all
    observable genes and ``spearman_masked`` / ``binary_correctness_masked`` over the observable
    genes that were *not* revealed to the encoder.
    """
    for key in ("pred", "logits", "target", "counts", "observable", "revealed"):
        if key not in rec:
            raise TfmkitError(f"reconstruction result lacks {key!r}; pass tfmkit.reconstruct output")
    obs = np.asarray(rec["observable"], bool)
    masked = obs & ~np.asarray(rec["revealed"], bool)
    return {
        "poisson_loss": poisson_loss_per_cell(rec["pred"], rec["target"], obs),
        "spearman": spearman_per_cell(rec["logits"], rec["counts"], obs),
        "spearman_masked": spearman_per_cell(rec["logits"], rec["counts"], masked),
        "binary_correctness": binary_correctness_per_cell(rec["logits"], rec["counts"], obs),
        "binary_correctness_masked": binary_correctness_per_cell(rec["logits"], rec["counts"],
                                                                 masked),
    }
