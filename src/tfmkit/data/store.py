"""The count-store interface: where a corpus' raw counts come from (SPEC §2, issue 8 item 5).

The data path is three layers:

1. a **count store** (this module's :class:`CountStore`) holds raw counts of several datasets
   aligned to one :class:`~tfmkit.data.vocab.GeneVocab`, each dataset with its own panel of
   *observable* genes, and hands out dense rows of a few cells at a time;
2. small pure **transforms** on batch tensors (:mod:`tfmkit.data.transforms`: normalise,
   reveal sampling, RDA downsampling, binning, ranking);
3. per-task **collators** (:mod:`tfmkit.data.collate`) that turn ``(store, cell indices,
   generator)`` into the batch dict a task needs.

Today the only store is the in-memory CSR :class:`tfmkit.data.corpus.Corpus` (alias
``InMemoryStore``). Stores that do not hold the corpus in RAM — a backed ``.h5ad`` reading
sparse rows on demand, sharded stores split across loader workers and DDP ranks (the scale
issue) — implement the same protocol, so collators, loaders and training need no change.
A store only has to produce the members below; everything else (normalisation, masking,
tokenisation) lives in transforms and collators.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from tfmkit.data.vocab import GeneVocab


@runtime_checkable
class CountStore(Protocol):
    """Raw counts of ``n_cells`` cells from ``len(names)`` datasets, aligned to ``vocab``.

    Cells have global indices ``0..n_cells-1``; dataset ``d`` is ``names[d]``. ``G`` =
    ``vocab.n_genes``. Implementations must return the same values for the same cells every
    time (the loaders' determinism relies on it).
    """

    vocab: GeneVocab
    """Gene vocabulary; column ``i`` of every ``(B, G)`` array is gene ``vocab.genes[i]``."""
    names: list[str]
    """Dataset names, in order (dataset id = position)."""
    n_cells: int
    """Number of cells over all datasets."""
    observable: list[np.ndarray]
    """Per dataset, sorted int64 vocabulary gene indices the dataset measured."""
    library_sizes: np.ndarray
    """``(n_cells,)`` float64 total counts of each cell over all genes of its original file
    (before vocabulary filtering): the denominator of library-size normalisation."""
    dataset_of_cell: np.ndarray
    """``(n_cells,)`` int64 dataset id of each cell."""
    obs: pd.DataFrame
    """Per-cell metadata, ``n_cells`` rows in global order, with a ``dataset`` column."""

    def dense_counts(self, cell_idx) -> np.ndarray:
        """``(B, G)`` float32 raw counts of the cells ``cell_idx`` (0 where unobservable)."""
        ...

    def observable_mask(self, dataset_ids) -> torch.Tensor:
        """``(B, G)`` bool: genes measured by the dataset of each entry of ``dataset_ids``."""
        ...

    def nonzero_cells(self) -> np.ndarray:
        """``(G,)`` int64: number of cells where each vocabulary gene is nonzero (``m_i``)."""
        ...

    def split(self, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded ``(train, validation)`` sorted arrays of global cell indices."""
        ...
