"""What the fine-tuning tasks (:mod:`tfmkit.tasks.celltype`, :mod:`tfmkit.tasks.perturbation`)
share: reading their ``train.task_kwargs``, the parent model's task whose collators they reuse,
and a validation split stratified by a label.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tfmkit.errors import TfmkitError
from tfmkit.tasks.base import Task, task_class


def task_options(cfg, task: str, required: set[str], how: str) -> dict:
    """A copy of ``cfg.train.task_kwargs`` of fine-tuning task ``task``; a one-line error naming
    the ``required`` keys that are missing and ``how`` to build such a config."""
    kw = dict(cfg.train.task_kwargs)
    missing = set(required) - set(kw)
    if missing:
        raise TfmkitError(f"train.task {task!r} needs train.task_kwargs {sorted(missing)}; build it with {how}")
    return kw


def parent_task(cfg, n_genes: int, options: dict) -> Task:
    """The parent model's task (for its collators; not trained here), popping its name
    ``base_task`` (default ``pretrain``) and options ``base_task_kwargs`` from ``options``."""
    return base_task(cfg, n_genes, options.pop("base_task", "pretrain"), options.pop("base_task_kwargs", None))


def base_task(cfg, n_genes: int, name: str, kwargs: dict | None = None) -> Task:
    """The parent model's task (for its collators): ``cfg`` with ``train.task = name``."""
    base_cfg = replace(cfg, train=replace(cfg.train, task=name, task_kwargs=dict(kwargs or {})))
    return task_class(name).from_config(base_cfg, n_genes)


def stratified_split(groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` sorted cell indices: ``round(val_fraction * n_g)`` random cells of
    every group ``g`` of ``groups`` (one integer code per cell) are held out, drawn with the
    generator seeded ``[seed, g + 1]``."""
    if not 0 <= val_fraction < 1:
        raise TfmkitError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    train, val = [], []
    for g in np.unique(groups):
        cells = np.random.default_rng([seed, int(g) + 1]).permutation(np.flatnonzero(groups == g))
        n_val = int(round(val_fraction * len(cells)))
        val.append(cells[:n_val])
        train.append(cells[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
