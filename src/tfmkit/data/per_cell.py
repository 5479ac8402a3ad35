"""One generator per cell for any collator: a cell's batch rows depend on the cell alone.

:func:`tfmkit.embed` seeds one generator per cell from the cell's own counts
(:func:`tfmkit.inference.cell_seeds`) when a collator accepts them (``per_cell_generators``), so
a cell's reveal, and hence its embedding, does not change with the batch size or the row order
(issue 12 item 1). :class:`~tfmkit.data.collate.PretrainCollator` draws per cell natively. Other
collators (the GPL autoregressive and BMFM ones) draw their random numbers batch-wise;
:class:`PerCellCollator` gives them the same property by calling the collator once per cell with
that cell's generator and stacking the rows, padding sequence dimensions on the right (``padding``
True, ids and values 0 = PAD). It is meant for inference batches (a Python loop over cells).
"""

from __future__ import annotations

import torch

from tfmkit.data import keys

#: Fill value of padded sequence slots per key (every other key pads with 0; ``GENE_IDS`` 0 = PAD).
PAD_VALUES = {keys.PADDING: True}


def stack_rows(rows: list[dict], pad_values: dict | None = None) -> dict:
    """Concatenate single-cell batch dicts along dim 0; tensors whose dim 1 differs between rows
    (sequence length ``T``) are right-padded to the longest with ``pad_values[key]`` (default 0)."""
    pad_values = PAD_VALUES if pad_values is None else pad_values
    out = {}
    for key in rows[0]:
        parts = [r[key] for r in rows]
        if parts[0].dim() >= 2 and len({p.shape[1] for p in parts}) > 1:
            t = max(p.shape[1] for p in parts)
            fill = pad_values.get(key, 0)
            padded = []
            for p in parts:
                extra = p.new_full((p.shape[0], t - p.shape[1], *p.shape[2:]), fill)  # (1, t - T_i, ...)
                padded.append(torch.cat([p, extra], dim=1))  # (1, t, ...)
            parts = padded
        out[key] = torch.cat(parts, dim=0)  # (B, ...)
    return out


class PerCellCollator:
    """Wrap ``inner`` so that it accepts a list of one generator per cell.

    Called with one generator (training) it is ``inner`` unchanged; with a list it calls
    ``inner(store, [cell], generator_of_cell)`` for each cell and stacks the rows
    (:func:`stack_rows`). ``fields`` and every other attribute are ``inner``'s.
    """

    per_cell_generators = True

    def __init__(self, inner) -> None:
        self.inner = inner
        self.fields = inner.fields

    def __getattr__(self, name):  # collator options (e.g. ``reveal``) read through the wrapper
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"PerCellCollator({self.inner!r})"

    def __call__(self, store, cell_idx, generator) -> dict:
        if not isinstance(generator, (list, tuple)):
            return self.inner(store, cell_idx, generator)
        if len(generator) != len(cell_idx):
            raise ValueError(f"{len(generator)} generators for {len(cell_idx)} cells")
        rows = [self.inner(store, [int(c)], g) for c, g in zip(cell_idx, generator)]
        return stack_rows(rows)


def per_cell(collate):
    """``collate`` itself when it already draws per cell, else :class:`PerCellCollator` around it."""
    return collate if getattr(collate, "per_cell_generators", False) else PerCellCollator(collate)


__all__ = ["PAD_VALUES", "PerCellCollator", "per_cell", "stack_rows"]
