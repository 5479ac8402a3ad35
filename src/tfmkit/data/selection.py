"""Training-cell selection (BMFM-RNA §2.2.3 "Data selection"): which cells of a corpus to train on.

- :func:`uniform_subsample` — a seeded uniform random subset (keeps the corpus' imbalances);
- :func:`equal_downsample` — round-robin priority sampling over strata (e.g. cell type x
  tissue): every stratum gives one cell per round, in a seeded random order, until the target
  size is reached, so each stratum contributes ``min(size, c)`` cells for a common cap ``c``
  (small strata are kept whole, large ones are cut to the same size). BMFM's 1% CELLxGENE corpus
  is this with strata cell type x tissue x tissue_general x disease (4,718 groups of 53 cells
  plus 2,246 smaller groups kept whole, §2.3).

Both return sorted positional indices (rows of ``obs`` / an AnnData), so
``adata[idx]`` is the selection; a missing value in a stratum column is its own stratum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError


def _target_size(n_cells: int, n: int | None, fraction: float | None) -> int:
    if (n is None) == (fraction is None):
        raise TfmkitError("give exactly one of n (number of cells) or fraction (of all cells)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise TfmkitError(f"fraction must be in (0, 1], got {fraction}")
        return int(round(fraction * n_cells))
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise TfmkitError(f"n must be a non-negative integer, got {n!r}")
    return int(min(n, n_cells))


def uniform_subsample(n_cells: int, n: int | None = None, *, fraction: float | None = None,
                      seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` (or ``round(fraction * n_cells)``) cells drawn uniformly without
    replacement from ``0..n_cells-1`` with ``seed``."""
    k = _target_size(int(n_cells), n, fraction)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(int(n_cells), size=k, replace=False)).astype(np.int64)


def strata_codes(obs: pd.DataFrame, by) -> np.ndarray:
    """``(n_cells,)`` int64 stratum of each row: the combination of the ``by`` columns' values
    (missing values form their own stratum). Raises a one-line error for an unknown column."""
    cols = [by] if isinstance(by, str) else list(by)
    if not cols:
        raise TfmkitError("equal downsampling needs at least one stratum column (by=...)")
    missing = [c for c in cols if c not in obs.columns]
    if missing:
        raise TfmkitError(f"stratum column(s) {missing} not in obs (it has {', '.join(map(str, obs.columns))})")
    keys = obs[cols].astype(str).where(obs[cols].notna(), "\0nan")  # NaN -> its own value
    return keys.groupby(cols, sort=True, observed=True).ngroup().to_numpy(np.int64)


def equal_downsample(obs: pd.DataFrame, by, n: int | None = None, *, fraction: float | None = None,
                     seed: int = 0) -> np.ndarray:
    """Round-robin priority sampling over the strata of ``by`` (BMFM §2.2.3); sorted row indices.

    Each stratum's cells are shuffled (seeded); round ``r`` takes the ``r``-th cell of every
    stratum that still has one, strata visited in one seeded random order; the first ``n`` cells
    taken (or ``round(fraction * n_cells)``) are returned. Hence every stratum contributes
    ``min(size, c)`` or ``min(size, c + 1)`` cells for one cap ``c``; with ``n = k * n_strata`` and
    ``k`` at most the smallest stratum, exactly ``k`` cells of each.
    """
    codes = strata_codes(obs, by)
    k = _target_size(len(codes), n, fraction)
    rng = np.random.default_rng(seed)
    n_strata = int(codes.max()) + 1 if len(codes) else 0
    stratum_rank = rng.permutation(n_strata)  # (S,) visiting order of each stratum
    order = rng.permutation(len(codes))  # shuffle cells, then stable-sort by stratum
    order = order[np.argsort(codes[order], kind="stable")]
    counts = np.bincount(codes, minlength=n_strata)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rounds = np.empty(len(codes), dtype=np.int64)
    rounds[order] = np.arange(len(codes)) - np.repeat(starts, counts)  # position within its stratum
    priority = np.lexsort((stratum_rank[codes], rounds))  # by round, then stratum order
    return np.sort(priority[:k]).astype(np.int64)
