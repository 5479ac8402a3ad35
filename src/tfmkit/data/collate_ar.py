"""Collator of the GPL permuted-autoregressive family (GPL paper §4.1 "Input construction").

Per cell (all randomness from the loader's generator, so a resumed run sees the same batches):

1. up to ``N`` (= ``data.n_revealed``) of its **expressed** genes (observable, count >= 1) are
   sampled uniformly without replacement;
2. ``Z = min(#undetected, ceil(undetected_fraction * S))`` of its **undetected** genes
   (observable, count 0) are appended as a detection signal (``S`` = expressed genes taken; a
   cell with no expressed gene gets one undetected gene so that it is never an empty sequence);
3. the ``S + Z`` tokens are put in a fresh random order (``order="random"``, training: the zeros
   are permuted together with the expressed genes) or in descending expression order
   (``order="descending"``, inference, as in GPL Suppl. D.1; ties by vocabulary index).

Each token carries its gene id and its **expression rank** in the whole cell (:func:`dense_ranks`:
tied counts share one rank), which the model feeds to rank-driven RoPE. The whole-cell counts,
observable mask and library size go along for the per-position GPL loss, and one category index
per conditioning ``obs`` column (:func:`encode_conditions`) for AdaLN.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from tfmkit.data import keys
from tfmkit.data.collate import check_cell_indices, pretrain_batch
from tfmkit.data.masking import RevealSpec
from tfmkit.data.transforms import log1p_normalize, reveal
from tfmkit.errors import TfmkitError

RANKS = "ranks"  # (B, T) float32 dense expression rank of each token in its cell (0 = undetected)
CONDITIONS = "conditions"  # (B, C) int64 category index per conditioning obs column (0 = unknown)

AR_FIELDS = keys.PRETRAIN_FIELDS + (RANKS, CONDITIONS)
"""Keys emitted by :class:`AutoregressiveCollator`. ``GENE_IDS``/``VALUES``/``PADDING``/``RANKS``
are ``(B, T)`` in sequence order; ``REVEALED`` (B, G) marks the genes in the sequence."""

ORDERS = ("random", "descending")


def dense_ranks(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Dense expression rank of each entry within its row, ascending with expression.

    Tie rule: entries with equal values share one rank. ``0`` for values ``<= 0`` (undetected),
    ``1`` for the smallest positive value of the row, ``2`` for the next distinct value, ...; so
    the most expressed gene's rank is the number of distinct positive values of its row (the
    ``compress_ranks`` convention of GPL Suppl. D.1, undetected at 0). Entries where ``valid``
    is False are ignored (and get rank 0). ``values`` ``(B, L)``; returns ``(B, L)`` float32.
    """
    x = values.float()
    if valid is not None:
        x = torch.where(valid.bool(), x, torch.zeros((), dtype=x.dtype))
    x = x.clamp_min(0.0)  # (B, L)
    srt = torch.sort(x, dim=1).values.contiguous()  # (B, L) ascending
    first = torch.ones_like(srt, dtype=torch.bool)  # (B, L) first occurrence of a value
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    n_distinct = torch.cumsum((first & (srt > 0)).int(), dim=1)  # (B, L) distinct positives so far
    last = torch.searchsorted(srt, x.contiguous(), right=True) - 1  # (B, L) last slot of the value
    ranks = n_distinct.gather(1, last.clamp_min(0))  # (B, L)
    return torch.where(x > 0, ranks, 0).float()


def encode_conditions(obs: pd.DataFrame, conditions: dict[str, list[str]], *,
                      strict: bool) -> torch.Tensor:
    """``(B, C)`` int64 category indices of the conditioning columns (sorted column names).

    ``conditions`` maps an ``obs`` column to its fixed, ordered category list (part of the model
    config, so a saved model reloads without looking at data); value ``categories[i]`` gets
    index ``i + 1`` and ``0`` means *unknown*. Values are compared as strings; missing values
    (NaN) are unknown. With ``strict`` (training) a missing column or a value outside the list
    is an error; otherwise (inference) they are mapped to unknown.
    """
    cols = sorted(conditions)
    out = np.zeros((len(obs), len(cols)), dtype=np.int64)
    for j, col in enumerate(cols):
        if col not in obs.columns:
            if strict:
                raise TfmkitError(f"AdaLN condition column {col!r} is not in the data's obs columns "
                                  f"({', '.join(map(str, obs.columns))}); fix model.conditions")
            continue
        cats = [str(c) for c in conditions[col]]
        lookup = {c: i + 1 for i, c in enumerate(cats)}
        raw = obs[col]
        missing = raw.isna().to_numpy()
        vals = raw.astype(str).to_numpy()
        idx = np.array([lookup.get(v, 0) for v in vals], dtype=np.int64)
        idx[missing] = 0
        unknown = (idx == 0) & ~missing
        if strict and unknown.any():
            bad = sorted(set(vals[unknown]))[:3]
            raise TfmkitError(f"obs column {col!r} has value(s) {bad} missing from model.conditions.{col}; "
                              "list every training category there")
        out[:, j] = idx
    return torch.from_numpy(out)


class AutoregressiveCollator:
    """Permuted-AR batches of the ``gpl_ar`` family (see the module docstring).

    Parameters
    ----------
    n_tokens
        ``N``: at most this many expressed genes per cell (GPL: 2048).
    undetected_fraction
        Undetected genes appended per expressed gene taken (GPL: ~10%).
    library_size
        Normalisation target ``L`` of ``VALUES``/``TARGET`` (informational for this family).
    conditions
        AdaLN ``obs`` columns -> fixed category lists (:func:`encode_conditions`).
    condition_dropout
        Probability of replacing each condition with *unknown* (trains the unknown row that
        unseen categories use at inference); 0 at inference.
    order
        ``"random"`` (training) or ``"descending"`` (inference) token order.
    strict
        Refuse conditioning values outside ``conditions`` (training) instead of mapping them to
        unknown (inference).
    """

    fields = AR_FIELDS

    def __init__(self, n_tokens: int, undetected_fraction: float = 0.1, library_size: float = 1e5, *,
                 conditions: dict | None = None, condition_dropout: float = 0.0,
                 order: str = "random", strict: bool = True) -> None:
        if order not in ORDERS:
            raise TfmkitError(f"token order must be one of {ORDERS}, got {order!r}")
        if not 0 <= undetected_fraction <= 1:
            raise TfmkitError(f"undetected_fraction must be in [0, 1], got {undetected_fraction}")
        if not 0 <= condition_dropout < 1:
            raise TfmkitError(f"condition_dropout must be in [0, 1), got {condition_dropout}")
        self.reveal = RevealSpec(n_revealed=n_tokens, expressed_only=True)
        self.undetected_fraction = float(undetected_fraction)
        self.library_size = float(library_size)
        self.conditions = dict(conditions or {})
        self.condition_dropout = float(condition_dropout)
        self.order = order
        self.strict = bool(strict)

    def __repr__(self) -> str:
        return (f"AutoregressiveCollator(N={self.reveal.n_revealed}, undetected={self.undetected_fraction}, "
                f"order={self.order!r}, conditions={sorted(self.conditions)})")

    def _undetected(self, observable, counts, n_expr, generator):
        """``(idx, valid)`` ``(B, Z)`` of the undetected genes appended to each cell."""
        zero = observable & (counts <= 0)  # (B, G)
        want = torch.ceil(n_expr.double() * self.undetected_fraction).long()  # (B,)
        want = torch.where(n_expr == 0, torch.ones_like(want), want)  # never an empty sequence
        want = torch.minimum(want, zero.sum(1))  # (B,)
        z = int(want.max()) if want.numel() else 0
        if z == 0:
            empty = torch.zeros((counts.shape[0], 0), dtype=torch.long)
            return empty, empty.bool()
        idx, valid = reveal(zero, RevealSpec(n_revealed=z), generator=generator)  # (B, Z) x2
        valid = valid & (torch.arange(idx.shape[1])[None, :] < want[:, None])  # (B, Z)
        return idx, valid

    def __call__(self, store, cell_idx, generator: torch.Generator | None) -> dict:
        """Batch dict (:data:`AR_FIELDS`) of the cells ``cell_idx`` of ``store``."""
        cell_idx = check_cell_indices(store, cell_idx)
        ds = torch.from_numpy(store.dataset_of_cell[cell_idx])  # (B,)
        observable = store.observable_mask(ds)  # (B, G)
        counts = torch.from_numpy(store.dense_counts(cell_idx)) * observable  # (B, G)
        lib = torch.from_numpy(store.library_sizes[cell_idx].astype(np.float32))  # (B,)
        target = log1p_normalize(counts, lib, self.library_size)  # (B, G)
        cell_ranks = dense_ranks(counts, observable)  # (B, G)

        idx_e, valid_e = reveal(observable, self.reveal, generator=generator, counts=counts)  # (B, Ke)
        idx_z, valid_z = self._undetected(observable, counts, valid_e.sum(1), generator)  # (B, Z)
        idx = torch.cat([idx_e, idx_z], dim=1)  # (B, T0)
        valid = torch.cat([valid_e, valid_z], dim=1)  # (B, T0)
        tok_rank = cell_ranks.gather(1, idx)  # (B, T0)
        if self.order == "random":
            key = torch.rand(idx.shape, generator=generator, dtype=torch.float64)  # (B, T0)
        else:  # descending rank, ties by vocabulary index
            key = -tok_rank.double() * (counts.shape[1] + 1) + idx.double()  # (B, T0)
        key = key.masked_fill(~valid, math.inf)  # padding last
        order = torch.argsort(key, dim=1)  # (B, T0)
        t = int(valid.sum(1).max()) if valid.numel() else 0
        order = order[:, :t]  # (B, T)
        idx, valid, tok_rank = idx.gather(1, order), valid.gather(1, order), tok_rank.gather(1, order)
        idx = idx.masked_fill(~valid, 0)  # (B, T)
        batch = pretrain_batch(target, idx, valid, observable=observable, counts=counts, library_size=lib,
                               dataset=ds)  # GENE_IDS, VALUES, PADDING (B, T) in sequence order

        cond = encode_conditions(store.obs.iloc[cell_idx], self.conditions, strict=self.strict)  # (B, C)
        if self.condition_dropout > 0 and cond.numel():
            drop = torch.rand(cond.shape, generator=generator) < self.condition_dropout  # (B, C)
            cond = cond.masked_fill(drop, 0)
        batch[RANKS] = tok_rank.masked_fill(~valid, 0.0).float()  # (B, T)
        batch[CONDITIONS] = cond  # (B, C)
        return batch


__all__ = ["AR_FIELDS", "CONDITIONS", "RANKS", "AutoregressiveCollator", "dense_ranks", "encode_conditions"]
