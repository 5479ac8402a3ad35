"""Per-task collators: ``(count store, cell indices, generator) -> batch dict`` (issue 8 item 5).

A collator is the last layer of the data path (:mod:`tfmkit.data.store` -> transforms ->
collator): it reads the counts of a batch of cells from a :class:`~tfmkit.data.store.CountStore`,
applies transforms (:mod:`tfmkit.data.transforms`) and emits exactly the keys a task needs,
declared in its ``fields``. All randomness comes from the generator it is called with, which the
step-seeded loader (:func:`tfmkit.data.corpus.make_dataloader`) seeds per ``(seed, step, rank)``.

:class:`PretrainCollator` builds the masked-autoencoder batch of TxFM (keys in
:data:`tfmkit.data.keys.PRETRAIN_FIELDS`). Other tasks (fine-tuning labels, perturbation tokens,
autoregressive gene orders, RDA-downsampled inputs) add their own collator next to it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from tfmkit.data import keys
from tfmkit.data.masking import RevealSpec
from tfmkit.data.normalize import DEFAULT_LIBRARY_SIZE
from tfmkit.data.store import CountStore
from tfmkit.data.transforms import log1p_normalize, reveal, revealed_tokens
from tfmkit.errors import TfmkitError


@runtime_checkable
class Collator(Protocol):
    """What the loaders call to build one batch.

    ``fields`` names the batch keys it emits (constants of :mod:`tfmkit.data.keys` or the task's
    own); ``__call__(store, cell_idx, generator)`` returns a dict with exactly those keys, each a
    tensor whose first dimension is the ``B = len(cell_idx)`` cells. It must be picklable (loader
    workers) and must draw random numbers only from ``generator``.
    """

    fields: tuple[str, ...]

    def __call__(self, store: CountStore, cell_idx, generator: torch.Generator | None) -> dict:
        ...


def check_cell_indices(store: CountStore, cell_idx) -> np.ndarray:
    """``cell_idx`` as a 1-D int64 array of valid global cell indices of ``store``."""
    cell_idx = np.asarray(cell_idx, dtype=np.int64)
    if cell_idx.ndim != 1 or (cell_idx.size and (cell_idx.min() < 0 or cell_idx.max() >= store.n_cells)):
        raise TfmkitError(f"cell indices must be a 1-D array in [0, {store.n_cells}).")
    return cell_idx


class PretrainCollator:
    """TxFM masked-autoencoder batches (TxFM §3; SPEC §2).

    ``TARGET = log1p(L * counts / library_size_of_cell)`` for every vocabulary gene (0 where
    unobservable); ``K = min(reveal.n_revealed, max #candidates)`` genes revealed per cell among
    its observable (and, with ``reveal.expressed_only``, nonzero, plus a ``reveal.zero_fraction``
    of observable zeros) genes, uniformly or with ``gene_weights``. Emits
    :data:`tfmkit.data.keys.PRETRAIN_FIELDS`. The generator may be one per cell
    (:attr:`per_cell_generators`): then a cell's batch does not depend on the other cells.

    Parameters
    ----------
    reveal
        The reveal-sampling spec (``K``, ``τ``, expressed-only).
    library_size
        Normalisation target ``L``.
    gene_weights
        ``(G,)`` sampling weights, used as given whenever not ``None``. Required when
        ``reveal.tau != 0``: build them with :meth:`for_store` (or
        ``reveal.gene_weights(store)``) from the training store.
    """

    fields = keys.PRETRAIN_FIELDS
    per_cell_generators = True
    """``__call__`` accepts a list of one generator per cell (used by :func:`tfmkit.embed`)."""

    def __init__(self, reveal: RevealSpec, library_size: float = DEFAULT_LIBRARY_SIZE,
                 gene_weights: torch.Tensor | None = None) -> None:
        if not isinstance(reveal, RevealSpec):
            raise TfmkitError(f"PretrainCollator needs a RevealSpec, got {type(reveal).__name__}.")
        if reveal.weighted and gene_weights is None:
            raise TfmkitError(f"reveal tau={reveal.tau} needs gene weights; build the collator with "
                              "PretrainCollator.for_store(store, reveal, library_size).")
        if not library_size > 0:
            raise TfmkitError(f"library_size must be > 0, got {library_size}.")
        self.reveal = reveal
        self.library_size = library_size
        self.gene_weights = gene_weights

    @classmethod
    def for_store(cls, store: CountStore, reveal: RevealSpec,
                  library_size: float = DEFAULT_LIBRARY_SIZE) -> "PretrainCollator":
        """Collator whose gene weights (when ``reveal.tau != 0``) are computed from ``store``'s
        nonzero-cell counts (:meth:`RevealSpec.gene_weights`)."""
        return cls(reveal, library_size, gene_weights=reveal.gene_weights(store))

    def __repr__(self) -> str:
        w = "weighted" if self.gene_weights is not None else "uniform"
        return f"PretrainCollator({self.reveal}, library_size={self.library_size}, {w})"

    def __call__(self, store: CountStore, cell_idx, generator) -> dict:
        """Batch dict of the cells ``cell_idx`` (global indices of ``store``); ``generator`` is a
        torch generator or a list of one per cell."""
        cell_idx = check_cell_indices(store, cell_idx)
        counts = torch.from_numpy(store.dense_counts(cell_idx))  # (B, G)
        lib = torch.from_numpy(store.library_sizes[cell_idx].astype(np.float32))  # (B,)
        target = log1p_normalize(counts, lib, self.library_size)  # (B, G)
        ds = torch.from_numpy(store.dataset_of_cell[cell_idx])  # (B,)
        observable = store.observable_mask(ds)  # (B, G)
        idx, valid = reveal(observable, self.reveal, generator=generator, gene_weights=self.gene_weights,
                            counts=counts)  # (B, K), (B, K)
        return pretrain_batch(target, idx, valid, observable=observable, counts=counts, library_size=lib,
                              dataset=ds)


def pretrain_batch(target: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, *,
                   observable: torch.Tensor, counts: torch.Tensor, library_size: torch.Tensor,
                   dataset: torch.Tensor) -> dict:
    """The :data:`tfmkit.data.keys.PRETRAIN_FIELDS` batch of cells whose encoder sees the genes
    ``idx`` where ``valid`` (both ``(B, K)``, in token order; see
    :func:`~tfmkit.data.transforms.revealed_tokens`).

    ``target`` ``(B, G)`` log1p-normalised values, ``observable`` ``(B, G)`` bool, ``counts``
    ``(B, G)`` raw counts, ``library_size`` ``(B,)`` and ``dataset`` ``(B,)`` per cell.
    """
    gene_ids, values, padding, revealed = revealed_tokens(target, idx, valid)  # (B, K) x3, (B, G)
    return {
        keys.GENE_IDS: gene_ids,
        keys.VALUES: values,
        keys.PADDING: padding,
        keys.TARGET: target,
        keys.OBSERVABLE: observable,
        keys.COUNTS: counts,
        keys.REVEALED: revealed,
        keys.LIBRARY_SIZE: library_size,
        keys.DATASET: dataset,
    }
