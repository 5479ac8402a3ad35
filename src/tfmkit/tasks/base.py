"""Tasks drive the one training loop: a task declares what it needs, builds its collator and
computes its loss.

A *task* is an ``nn.Module`` (so learned loss parameters — NB dispersion, depth-shift ``s0``,
a classifier head — are trained and checkpointed with it) registered in :data:`TASKS`:

- :meth:`Task.required_outputs` (a classmethod over the run config) names the
  :class:`~tfmkit.models.protocol.ModelOutput` fields the task reads;
  :func:`check_compatible` compares them with the model family's ``outputs`` when a config is
  loaded, so a misfit fails before any training or output with one line naming both;
- :meth:`Task.collator` builds the batch function over a count store
  (:mod:`tfmkit.data.collate`), :meth:`Task.inference_collator` the one used to embed new cells;
- :meth:`Task.loss` maps ``(ModelOutput, batch)`` to a per-cell loss ``(B,)``.

:mod:`tfmkit.training` only calls these three, whatever the model family or task.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tfmkit.errors import TfmkitError
from tfmkit.registry import Registry

#: Tasks by name (``train.task`` in a run config).
TASKS: Registry = Registry("task")


class Task(nn.Module):
    """Base class of training tasks (pretraining objectives, fine-tuning tasks)."""

    #: Registered name.
    name: ClassVar[str] = ""

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "Task":  # pragma: no cover - abstract
        """Build the task of run config ``cfg`` for a vocabulary of ``n_genes`` genes."""
        raise NotImplementedError

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:  # pragma: no cover - abstract
        """:class:`~tfmkit.models.protocol.ModelOutput` fields / head names the task reads."""
        raise NotImplementedError

    @classmethod
    def describe(cls, cfg) -> str:
        """How error messages name this task in ``cfg`` (e.g. ``train.objective 'gpl_nll'``)."""
        return f"train.task {cls.name!r}"

    def collator(self, store):  # pragma: no cover - abstract
        """Batch function ``(store, cell_idx, generator) -> dict`` for this task."""
        raise NotImplementedError

    def inference_collator(self, store, n_revealed: int | None = None):
        """Batch function used to embed / reconstruct new cells (default: :meth:`collator`).

        ``n_revealed`` overrides how many genes each cell shows the model, where the task
        has such a setting.
        """
        return self.collator(store)

    def loss(self, output, batch: dict) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-cell loss ``(B,)``; the loop takes its mean."""
        raise NotImplementedError


def task_class(name: str) -> type[Task]:
    """The registered task class ``name`` (one-line error listing the valid names)."""
    if name not in TASKS:
        raise TfmkitError(f"unknown train.task {name!r}; choose one of: {', '.join(TASKS.names())}")
    return TASKS.get(name)


def check_compatible(cfg) -> None:
    """Refuse a run config whose task needs model outputs its model family does not produce."""
    from tfmkit.models.build import family_class

    family = family_class(cfg.model.family)
    task = task_class(cfg.train.task)
    produced = family.outputs_for(cfg.model)
    missing = task.required_outputs(cfg) - produced
    if missing:
        raise TfmkitError(
            f"{task.describe(cfg)} needs model output(s) {', '.join(sorted(missing))}, which model "
            f"family {family.family!r} does not produce with this config (it produces "
            f"{', '.join(sorted(produced))}); choose another objective, head or model.family")


def build_task(cfg, n_genes: int) -> Task:
    """The task of run config ``cfg`` (checked against the model family first)."""
    check_compatible(cfg)
    return task_class(cfg.train.task).from_config(cfg, n_genes)
