"""Seeded cell subsampling that bounds the cost of a benchmark (``--max-cells N --seed S``).

A benchmark's cost grows with its cells (neighbour graphs, probes, model forward passes), so
every ``tfmkit benchmark`` command can first keep ``N`` cells of its input:

- without labels, ``N`` cells drawn uniformly without replacement;
- with labels (the cell-type benchmark's ``--label-key``, or its batches in batch-only mode),
  a **stratified** draw: each label keeps ``min(n_l, min_per_label)`` cells at least, the rest
  of the budget is shared in proportion to the label sizes (largest remainder), so the label
  proportions are kept and no label disappears.

The draw depends only on ``(n_obs, N, S, labels)``: the same seed gives the same cells.
"""

from __future__ import annotations

import sys

import numpy as np

from tfmkit.errors import TfmkitError

MIN_PER_LABEL = 10  # cells kept of every label (all of a smaller one): isolated-label and kNN metrics


def check_max_cells(max_cells: int | None, option: str = "--max-cells") -> None:
    """Refuse a ``max_cells`` below 1 (``None`` = keep every cell)."""
    if max_cells is not None and int(max_cells) < 1:
        raise TfmkitError(f"{option} must be a positive number of cells (or omitted to keep every "
                          f"cell), got {max_cells}")


def _quotas(counts: np.ndarray, total: int, floor: np.ndarray) -> np.ndarray:
    """Cells per label: at least ``floor``, at most ``counts``, summing to ``total``, otherwise
    proportional to ``counts`` (largest-remainder rounding)."""
    ideal = total * counts / counts.sum()  # (L,) <= counts since total < counts.sum()
    quota = np.maximum(floor, np.floor(ideal).astype(np.int64))  # (L,)
    while quota.sum() < total:  # add to the labels furthest below their share
        room = np.where(quota < counts, ideal - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > total:  # take from the labels furthest above their share
        spare = np.where(quota > floor, quota - ideal, -np.inf)
        quota[int(np.argmax(spare))] -= 1
    return quota


def subsample_cells(n_obs: int, max_cells: int | None, *, seed: int = 0, labels=None,
                    min_per_label: int = MIN_PER_LABEL) -> np.ndarray:
    """Sorted indices of at most ``max_cells`` of ``n_obs`` cells (all of them when
    ``max_cells`` is ``None`` or ≥ ``n_obs``), drawn with ``numpy.random.default_rng(seed)``;
    stratified by ``labels`` ``(n_obs,)`` when given (see the module doc)."""
    check_max_cells(max_cells)
    if max_cells is None or max_cells >= n_obs:
        return np.arange(n_obs)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_obs, int(max_cells), replace=False))
    labels = np.asarray(labels)
    if labels.shape != (n_obs,):
        raise TfmkitError(f"labels must have one entry per cell ({n_obs}), got {labels.shape}")
    uniq, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    floor = np.minimum(counts, min_per_label)
    if floor.sum() > max_cells:
        raise TfmkitError(f"--max-cells {max_cells} cannot keep {min_per_label} cells of each of the "
                          f"{len(uniq)} labels; pass --max-cells {int(floor.sum())} or more")
    quota = _quotas(counts, int(max_cells), floor)
    keep = [rng.choice(np.flatnonzero(codes == c), int(q), replace=False)
            for c, q in enumerate(quota)]
    return np.sort(np.concatenate(keep))


def report_subsample(n_obs: int, idx: np.ndarray, seed: int, what: str, stratified_by=None) -> None:
    """Say on stderr that ``what`` uses ``len(idx)`` of ``n_obs`` cells (nothing if all)."""
    if len(idx) < n_obs:
        how = f", stratified by {stratified_by!r}" if stratified_by else ""
        print(f"{what}: subsampled {len(idx)} of {n_obs} cells (--max-cells {len(idx)}, "
              f"--seed {seed}{how})", file=sys.stderr)
