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


class _Order:
    """One descending sort of each row of ``x`` ``(N, G)`` over its ``valid`` entries (the
    others pushed to the end; ties by gene index), from which the midranks and positions of
    *any* subset of the valid entries follow in linear time (:meth:`within`). Spearman and
    binary correctness over the observable genes and over the masked ones share it: two sorts
    per cell instead of six."""

    def __init__(self, x: np.ndarray, valid: np.ndarray) -> None:
        n_rows, n_genes = x.shape
        rows = (np.arange(n_rows) * n_genes)[:, None]  # (N, 1) flat offsets
        key = -np.where(valid, x, -np.inf)  # (N, G) ascending = best first
        order = np.argsort(key, axis=1)  # (N, G) quicksort (5x a stable sort of floats)
        v = key.ravel()[(order + rows).ravel()].reshape(n_rows, n_genes)  # (N, G) sorted values
        new = np.ones(v.shape, bool)
        new[:, 1:] = v[:, 1:] != v[:, :-1]
        self.group = np.cumsum(new, axis=1) - 1  # (N, G) tie-group index along the sorted row
        # ties by gene index (the stable order): re-sort by the unique key (group, gene)
        fix = np.argsort(self.group * n_genes + order, axis=1)  # (N, G)
        self.flat_order = (order.ravel()[(fix + rows).ravel()] + rows.repeat(n_genes))  # (N*G,)
        self.flat_group = (self.group + rows).ravel()  # (N*G,) monotone per row
        self.shape = (n_rows, n_genes)

    def within(self, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ranks, position)`` ``(N, G)`` for the entries of ``subset`` (others undefined):
        ascending average ranks (1-based, ties = midrank, as ``scipy.stats.rankdata`` on the
        subset) and the 0-based position in the descending order of the subset."""
        n_rows, n_genes = self.shape
        s = np.ascontiguousarray(subset).ravel()[self.flat_order].reshape(self.shape)  # sorted flags
        cnt = np.bincount(self.flat_group, weights=s.ravel(), minlength=n_rows * n_genes)  # (N*G,)
        before = (np.cumsum(cnt.reshape(self.shape), axis=1) - cnt.reshape(self.shape)).ravel()
        desc = before[self.flat_group] + (cnt[self.flat_group] + 1) / 2  # (N*G,) descending midranks
        asc = (s.sum(1)[:, None] + 1) - desc.reshape(self.shape)  # (N, G)
        ranks = np.empty(n_rows * n_genes)
        ranks[self.flat_order] = asc.ravel()
        position = np.empty(n_rows * n_genes, dtype=np.int64)
        position[self.flat_order] = (np.cumsum(s, axis=1) - 1).ravel()
        return ranks.reshape(self.shape), position.reshape(self.shape)


def _spearman_from_ranks(rp: np.ndarray, ro: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-row Pearson correlation of the ranks ``rp``, ``ro`` over the entries in ``m``."""
    n = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.where(m, rp, 0).sum(1) / n
        mo = np.where(m, ro, 0).sum(1) / n
        dp = np.where(m, rp - mp[:, None], 0.0)
        do = np.where(m, ro - mo[:, None], 0.0)
        r = (dp * do).sum(1) / np.sqrt((dp * dp).sum(1) * (do * do).sum(1))
    r[(n < 2) | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _binary_from_positions(position: np.ndarray, counts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Share of the expressed entries of ``m`` whose descending position is < their number."""
    expressed = (counts > 0) & m
    n_expr = expressed.sum(1)
    hits = (expressed & (position < n_expr[:, None])).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_expr > 0, hits / n_expr, np.nan)


def spearman_per_cell(pred, observed, mask=None) -> np.ndarray:
    """Spearman correlation per row between ``pred`` and ``observed`` ``(N, G)`` over the
    entries in ``mask`` (midrank ties; equal to ``scipy.stats.spearmanr`` on each row's
    subset). Returns ``(N,)``; NaN for rows with < 2 entries or a constant side."""
    p, o, m = _check(pred, observed, mask)
    return _spearman_from_ranks(_Order(p, m).within(m)[0], _Order(o, m).within(m)[0], m)


def binary_correctness_per_cell(pred, counts, mask=None) -> np.ndarray:
    """Per row: fraction of expressed genes (``counts > 0`` inside ``mask``) that are among the
    ``N`` highest-``pred`` genes of ``mask`` (ties by gene order), ``N`` = number expressed.
    ``(N_cells,)``."""
    p, c, m = _check(pred, counts, mask)
    return _binary_from_positions(_Order(p, m).within(m)[1], c, m)


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
    logits, counts, _ = _check(rec["logits"], rec["counts"], obs)
    by_pred, by_count = _Order(logits, obs), _Order(counts, obs)  # shared by both gene sets
    out = {"poisson_loss": poisson_loss_per_cell(rec["pred"], rec["target"], obs)}
    spearman, binary = {}, {}
    for suffix, m in (("", obs), ("_masked", masked)):
        rp, position = by_pred.within(m)
        spearman[f"spearman{suffix}"] = _spearman_from_ranks(rp, by_count.within(m)[0], m)
        binary[f"binary_correctness{suffix}"] = _binary_from_positions(position, counts, m)
    return {**out, **spearman, **binary}
