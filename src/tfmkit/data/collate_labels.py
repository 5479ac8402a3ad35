"""Collator of labelled cells for fine-tuning: the model's own batch plus integer labels.

:class:`LabelCollator` wraps the batch function of the parent model's task (whatever the family:
TxFM's :class:`~tfmkit.data.collate.PretrainCollator`, GPL-AR's autoregressive collator, ...)
and adds ``LABEL`` (and ``BATCH_LABEL`` for a gradient-reversal adversary), read from the store's
``obs`` columns and coded by a fixed list of classes. Cells whose value is not one of the
classes get code ``-1`` (ignored by the loss).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfmkit.data.collate import check_cell_indices

LABEL = "label"  # (B,) int64 class index of each cell's label (-1 = unknown)
BATCH_LABEL = "batch_label"  # (B,) int64 index of each cell's batch (-1 = unknown)


def label_codes(store, key: str, classes) -> np.ndarray:
    """``(n_cells,)`` int64 index of ``store.obs[key]`` in ``classes`` (``-1`` where absent or NaN)."""
    values = store.obs[key]
    codes = pd.Index([str(c) for c in classes]).get_indexer(values.astype(str))
    codes[values.isna().to_numpy()] = -1
    return codes.astype(np.int64)


class LabelCollator:
    """``base`` batches plus ``LABEL`` (and optionally ``BATCH_LABEL``) of each cell.

    Parameters
    ----------
    base
        The parent task's collator ``(store, cell_idx, generator) -> dict``.
    labels
        ``(n_cells,)`` int64 class codes of every store cell (:func:`label_codes`).
    batches
        Optional ``(n_cells,)`` int64 batch codes of every store cell.
    """

    def __init__(self, base, labels: np.ndarray, batches: np.ndarray | None = None) -> None:
        self.base = base
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batches = None if batches is None else np.asarray(batches, dtype=np.int64)
        self.fields = tuple(getattr(base, "fields", ())) + (LABEL,) + ((BATCH_LABEL,) if batches is not None else ())

    def __call__(self, store, cell_idx, generator: torch.Generator | None) -> dict:
        cell_idx = check_cell_indices(store, cell_idx)
        batch = dict(self.base(store, cell_idx, generator))
        batch[LABEL] = torch.from_numpy(self.labels[cell_idx])  # (B,)
        if self.batches is not None:
            batch[BATCH_LABEL] = torch.from_numpy(self.batches[cell_idx])  # (B,)
        return batch
