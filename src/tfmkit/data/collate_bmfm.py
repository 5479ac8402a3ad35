"""BMFM-style collators: masked-language-model batches with optional read-depth-aware (RDA)
downsampling, and per-cell label codes for multitask training (BMFM-RNA §2.2.4-2.2.5, §2.3).

:class:`MLMCollator` builds, per cell, a sequence of up to ``K`` gene tokens (the cell's expressed
genes first, in random order; observed zeros fill the remaining slots, as in BMFM's MLM+RDA model
§2.3.1), then

- **value masking**: each token enters the value loss with probability ``mask_rate``; of those a
  fraction ``keep_rate`` keeps its value visible in the input (BMFM's "value calibration"
  tokens), the rest have their value replaced by the model's MASK vector (``VALUE_MASKED``);
- **gene masking**: independently, each token's gene id is replaced by the MASK token with
  probability ``gene_mask_rate`` and its gene index becomes a target (``MLM_GENE_TARGET``);
- **RDA** (optional, after scFoundation): the *input* values come from counts binomially thinned
  to a sampled depth (:func:`tfmkit.data.transforms.rda_downsample`), the *targets* from the
  original counts; ``DEPTH`` carries the two totals ``[input depth, original depth]`` that the
  model turns into its two depth tokens (scFoundation's ``S`` and ``T``). Without RDA both are
  the cell's library size.

:class:`LabelCollator` adds ``label:<name>`` codes to any base collator's batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfmkit.data import keys
from tfmkit.data.collate import check_cell_indices
from tfmkit.data.masking import RevealSpec
from tfmkit.data.store import CountStore
from tfmkit.data.transforms import hard_bins, log1p_normalize, log2_bins, rda_downsample
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError

VALUE_MASKED = "value_masked"  # (B, K) bool, True where the input value is replaced by MASK
MLM_VALUE_TARGET = "mlm_value_target"  # (B, K) float32 log1p-normalised value at the original depth
MLM_VALUE_LOSS = "mlm_value_loss"  # (B, K) bool, True where the value enters the MLM loss
MLM_BIN_TARGET = "mlm_bin_target"  # (B, K) int64 expression bin of MLM_VALUE_TARGET
MLM_GENE_TARGET = "mlm_gene_target"  # (B, K) int64 gene index of gene-masked tokens, -1 elsewhere
DEPTH = "depth"  # (B, 2) float32 total counts [input (after RDA), original] of each cell
LABEL_PREFIX = "label:"  # label:<name> (B,) int64 class code of each cell, -1 = missing/unseen

BINNINGS = ("log2", "quantile")


def label_key(name: str) -> str:
    """Batch key of the codes of label head ``name``."""
    return LABEL_PREFIX + name


def select_tokens(observable: torch.Tensor, counts: torch.Tensor, n_tokens: int, *,
                  generator: torch.Generator | None, expressed_only: bool = False):
    """Up to ``n_tokens`` observable genes per cell, expressed genes first (BMFM §2.3.1).

    Expressed genes (``counts > 0``) are taken in random order; if a cell has fewer than
    ``n_tokens`` of them, random observed zeros fill the rest (none with ``expressed_only``).
    ``observable``/``counts`` ``(B, G)``. Returns ``idx`` ``(B, K)`` int64 gene indices (0 where
    padded) and ``valid`` ``(B, K)`` bool, ``K = min(n_tokens, max #candidates)``.
    """
    if n_tokens < 1:
        raise TfmkitError(f"n_revealed must be >= 1, got {n_tokens}.")
    expressed = observable & (counts > 0)  # (B, G)
    cand = expressed if expressed_only else observable  # (B, G)
    u = torch.rand(cand.shape, generator=generator)  # (B, G)
    scores = (u + expressed.float()).masked_fill(~cand, float("-inf"))  # (B, G) expressed rank first
    n_cand = cand.sum(1)  # (B,)
    k = int(min(n_tokens, int(n_cand.max()) if cand.shape[0] else 0))
    if k == 0:
        empty = torch.zeros((cand.shape[0], 0), dtype=torch.long)
        return empty, empty.bool()
    idx = torch.topk(scores, k, dim=1).indices  # (B, K)
    valid = torch.arange(k)[None, :] < n_cand[:, None]  # (B, K)
    return idx.masked_fill(~valid, 0), valid


class MLMCollator:
    """Masked expression / masked gene batches, optionally RDA-downsampled (see module docstring).

    Parameters
    ----------
    n_tokens
        ``K``: gene tokens per cell (``data.n_revealed``).
    library_size
        Normalisation target ``L`` of input values and targets.
    mask_rate
        Probability that a token's value enters the loss (BMFM: 0.15 or 0.3).
    keep_rate
        Fraction of the loss tokens whose value stays visible (BMFM §2.3.1: 0.05).
    gene_mask_rate
        Probability that a token's gene id is masked and predicted (0 disables).
    expressed_only
        Only expressed genes become tokens (no zero padding genes).
    rda
        ``None`` (off) or keyword arguments of :func:`~tfmkit.data.transforms.rda_downsample`
        (``min_depth``, ``keep_prob``).
    n_bins
        Emit ``MLM_BIN_TARGET`` with this many bins (bin 0 = zero); ``None`` = no bins.
    binning
        ``log2`` (``min(floor(log2(c + 1)), n_bins - 1)`` of the normalised count ``c``) or
        ``quantile`` (per-cell quantile bins of the cell's nonzero token values,
        :func:`~tfmkit.data.transforms.hard_bins`).
    """

    def __init__(self, n_tokens: int, library_size: float, *, mask_rate: float = 0.15,
                 keep_rate: float = 0.0, gene_mask_rate: float = 0.0, expressed_only: bool = False,
                 rda: dict | None = None, n_bins: int | None = None, binning: str = "log2") -> None:
        for name, p in (("mask_rate", mask_rate), ("keep_rate", keep_rate), ("gene_mask_rate", gene_mask_rate)):
            if not 0 <= p <= 1:
                raise TfmkitError(f"MLM {name} must be in [0, 1], got {p}.")
        if binning not in BINNINGS:
            raise TfmkitError(f"MLM binning must be one of {', '.join(BINNINGS)}, got {binning!r}.")
        if n_bins is not None and n_bins < 2:
            raise TfmkitError(f"MLM value bins need n_bins >= 2 (bin 0 = zero), got {n_bins}.")
        if rda is not None and (not isinstance(rda, dict) or set(rda) - {"min_depth", "keep_prob"}):
            raise TfmkitError(f"rda must be null or a mapping with min_depth / keep_prob, got {rda!r}.")
        self.n_tokens, self.library_size = int(n_tokens), float(library_size)
        self.mask_rate, self.keep_rate, self.gene_mask_rate = float(mask_rate), float(keep_rate), float(gene_mask_rate)
        self.expressed_only, self.rda = bool(expressed_only), (dict(rda) if rda is not None else None)
        self.n_bins, self.binning = n_bins, binning
        self.reveal = RevealSpec(n_revealed=self.n_tokens, expressed_only=self.expressed_only)  # provenance
        self.fields = (keys.GENE_IDS, keys.VALUES, keys.PADDING, VALUE_MASKED, MLM_VALUE_TARGET,
                       MLM_VALUE_LOSS, MLM_GENE_TARGET, DEPTH, keys.LIBRARY_SIZE, keys.DATASET) + (
                           (MLM_BIN_TARGET,) if n_bins is not None else ())

    def __repr__(self) -> str:
        return (f"MLMCollator(K={self.n_tokens}, mask_rate={self.mask_rate}, keep_rate={self.keep_rate}, "
                f"gene_mask_rate={self.gene_mask_rate}, rda={self.rda})")

    def __call__(self, store: CountStore, cell_idx, generator: torch.Generator | None) -> dict:
        cell_idx = check_cell_indices(store, cell_idx)
        counts = torch.from_numpy(store.dense_counts(cell_idx))  # (B, G)
        lib = torch.from_numpy(store.library_sizes[cell_idx].astype(np.float32))  # (B,)
        ds = torch.from_numpy(store.dataset_of_cell[cell_idx])  # (B,)
        observable = store.observable_mask(ds)  # (B, G)
        target = log1p_normalize(counts, lib, self.library_size)  # (B, G) original depth
        if self.rda is not None:
            counts_in, lib_in = rda_downsample(counts, lib, generator=generator, **self.rda)  # (B, G), (B,)
            inputs = log1p_normalize(counts_in, lib_in, self.library_size)  # (B, G)
        else:
            lib_in, inputs = lib, target
        idx, valid = select_tokens(observable, counts, self.n_tokens, generator=generator,
                                   expressed_only=self.expressed_only)  # (B, K), (B, K)
        B, k = idx.shape
        draws = torch.rand((3, B, k), generator=generator)  # (3, B, K)
        in_loss = valid & (draws[0] < self.mask_rate)  # (B, K)
        value_masked = in_loss & (draws[1] >= self.keep_rate)  # (B, K)
        gene_masked = valid & (draws[2] < self.gene_mask_rate)  # (B, K)
        gene_ids = torch.where(valid, idx + GeneVocab.N_SPECIAL, torch.full_like(idx, GeneVocab.PAD))  # (B, K)
        gene_ids = gene_ids.masked_fill(gene_masked, GeneVocab.MASK)  # (B, K)
        values = (inputs.gather(1, idx) * valid).masked_fill(value_masked, 0.0)  # (B, K)
        value_target = target.gather(1, idx) * valid  # (B, K)
        batch = {
            keys.GENE_IDS: gene_ids,
            keys.VALUES: values,
            keys.PADDING: ~valid,
            VALUE_MASKED: value_masked,
            MLM_VALUE_TARGET: value_target,
            MLM_VALUE_LOSS: in_loss,
            MLM_GENE_TARGET: torch.where(gene_masked, idx, torch.full_like(idx, -1)),  # (B, K)
            DEPTH: torch.stack([lib_in.float(), lib], dim=1),  # (B, 2)
            keys.LIBRARY_SIZE: lib,
            keys.DATASET: ds,
        }
        if self.n_bins is not None:
            if self.binning == "log2":
                bins = log2_bins(value_target, self.n_bins - 1, "log1p")  # (B, K)
            else:
                bins = hard_bins(value_target, self.n_bins)  # (B, K)
            batch[MLM_BIN_TARGET] = bins * valid  # (B, K)
        return batch


# ---- labels ----------------------------------------------------------------------------------
def resolve_column(obs: pd.DataFrame, columns, what: str) -> str:
    """The first of ``columns`` (a name or a list of alternatives) that is an ``obs`` column."""
    cands = [columns] if isinstance(columns, str) else list(columns)
    for c in cands:
        if c in obs.columns:
            return c
    raise TfmkitError(f"{what} needs obs column {' or '.join(map(repr, cands))}, which the training data "
                      f"lacks (it has {', '.join(map(str, obs.columns))}); add it or name another column")


def label_categories(values: pd.Series) -> list[str]:
    """Sorted distinct non-missing values of ``values`` as strings (the default class order)."""
    v = values[values.notna()].astype(str)
    return sorted(set(v.tolist()))


def encode_labels(values: pd.Series, categories) -> np.ndarray:
    """``(n,)`` int64 index of each value in ``categories``; ``-1`` for missing or unseen values."""
    codes = pd.Index([str(c) for c in categories]).get_indexer(values.astype(str))
    codes[values.isna().to_numpy()] = -1
    return codes.astype(np.int64)


class LabelCollator:
    """``base`` batches plus ``label:<name>`` ``(B,)`` codes of each cell for every label head.

    ``codes`` maps head name -> ``(n_cells,)`` int64 codes of every store cell
    (:func:`encode_labels`).
    """

    def __init__(self, base, codes: dict[str, np.ndarray]) -> None:
        self.base = base
        self.codes = {k: np.asarray(v, dtype=np.int64) for k, v in codes.items()}
        self.fields = tuple(getattr(base, "fields", ())) + tuple(label_key(k) for k in self.codes)

    def __call__(self, store: CountStore, cell_idx, generator: torch.Generator | None) -> dict:
        cell_idx = check_cell_indices(store, cell_idx)
        batch = dict(self.base(store, cell_idx, generator))
        for name, codes in self.codes.items():
            batch[label_key(name)] = torch.from_numpy(codes[cell_idx])  # (B,)
        return batch
