"""Collator of perturbation-prediction fine-tuning (GPL §4.6): a perturbation token, then a random
subsequence of a cell's expression; the target is the cell's whole profile.

:class:`PerturbationCollator` wraps the batch function of the parent model's task (its reveal
rule samples the random subsequence of ``K`` genes) and

1. hides the perturbed gene itself from the revealed genes (the perturbation token already says
   what happened to it; at prediction time a control cell's value of that gene would contradict
   the token);
2. prepends the **perturbation token** of each cell's target gene ``g``: token id
   ``N_SPECIAL + g`` (the gene's own identity embedding, so a target never perturbed in training
   still has a pretrained vector) with the expression value :data:`PERT_VALUE`, a code outside
   the range of log1p expression that no expressed gene can take. Every other per-token field of
   the parent batch gets a neutral entry (0 / False) at that position;
3. adds :data:`PERT_TARGET`, the ``(B, G)`` profile ``log1p(target_sum * counts / library)``
   (the log1p-normalised space of the Virtual Cell Challenge, ``target_sum = 1e4``),
   :data:`~tfmkit.data.keys.OBSERVABLE` and :data:`PERT_GENE`.

Cells whose target code is ``-1`` (controls) get a PAD token in front instead (no perturbation).
"""

from __future__ import annotations

import numpy as np
import torch

from tfmkit.data import keys
from tfmkit.data.collate import check_cell_indices
from tfmkit.data.transforms import log1p_normalize
from tfmkit.data.vocab import GeneVocab

PERT_VALUE = -1.0
"""Expression value carried by the perturbation token (log1p expression is never negative)."""
PERT_TARGET = "pert_target"  # (B, G) float32 log1p(target_sum * counts / library) of every gene
PERT_GENE = "pert_gene"  # (B,) int64 vocabulary gene index of the perturbed gene (-1 = control)
#: ``(B, G)`` fields of a parent batch (never per-token, even when ``K == G``).
PER_GENE = frozenset({keys.TARGET, keys.OBSERVABLE, keys.COUNTS, keys.REVEALED})
VCC_TARGET_SUM = 1e4
"""Normalisation target of the perturbation profiles (Virtual Cell Challenge convention)."""


class PerturbationCollator:
    """Parent-task batches with a perturbation token in front (see the module doc).

    Parameters
    ----------
    base
        The parent task's collator ``(store, cell_idx, generator) -> dict`` emitting at least
        ``GENE_IDS``, ``VALUES`` and ``PADDING`` (``(B, K)``).
    targets
        ``(n_cells,)`` int64 vocabulary gene index of every store cell's perturbed gene (``-1`` for
        controls), or one int used for every cell (prediction: a perturbation applied to control
        cells).
    target_sum
        Normalisation target of :data:`PERT_TARGET`.
    """

    def __init__(self, base, targets, target_sum: float = VCC_TARGET_SUM) -> None:
        self.base = base
        self.targets = targets if isinstance(targets, (int, np.integer)) else np.asarray(targets, np.int64)
        self.target_sum = float(target_sum)
        self.fields = tuple(dict.fromkeys(tuple(getattr(base, "fields", ())) +
                                          (PERT_TARGET, keys.OBSERVABLE, PERT_GENE)))

    def __call__(self, store, cell_idx, generator) -> dict:
        cell_idx = check_cell_indices(store, cell_idx)
        batch = dict(self.base(store, cell_idx, generator))
        B = len(cell_idx)
        target = (np.full(B, int(self.targets), np.int64) if isinstance(self.targets, (int, np.integer))
                  else self.targets[cell_idx])
        t = torch.from_numpy(target)  # (B,)
        ids, K = batch[keys.GENE_IDS], batch[keys.GENE_IDS].shape[1]  # (B, K)
        hide = (ids == (t + GeneVocab.N_SPECIAL).unsqueeze(1)) & (t >= 0).unsqueeze(1)  # (B, K)
        batch[keys.GENE_IDS] = ids.masked_fill(hide, GeneVocab.PAD)
        batch[keys.PADDING] = batch[keys.PADDING] | hide
        if keys.VALUES in batch:
            batch[keys.VALUES] = batch[keys.VALUES].masked_fill(hide, 0.0)
        token = torch.where(t >= 0, t + GeneVocab.N_SPECIAL, torch.full_like(t, GeneVocab.PAD))  # (B,)
        for k, v in list(batch.items()):  # prepend one position to every (B, K) per-token field
            if k in PER_GENE or not (isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == (B, K)):
                continue
            if k == keys.GENE_IDS:
                first = token.to(v.dtype).unsqueeze(1)  # (B, 1)
            elif k == keys.VALUES:
                first = torch.full((B, 1), PERT_VALUE, dtype=v.dtype)
            elif k == keys.PADDING:
                first = (t < 0).unsqueeze(1)  # (B, 1) a control cell has no perturbation token
            else:
                first = torch.zeros((B, 1), dtype=v.dtype)
            batch[k] = torch.cat([first, v], dim=1)  # (B, K+1)
        counts = torch.from_numpy(store.dense_counts(cell_idx))  # (B, G)
        lib = torch.from_numpy(store.library_sizes[cell_idx].astype(np.float32))  # (B,)
        batch[PERT_TARGET] = log1p_normalize(counts, lib, self.target_sum)  # (B, G)
        batch[keys.OBSERVABLE] = store.observable_mask(torch.from_numpy(store.dataset_of_cell[cell_idx]))  # (B, G)
        batch[PERT_GENE] = t  # (B,)
        return batch
