"""Training tasks (pretraining objectives, fine-tuning tasks) behind one interface.

See :mod:`tfmkit.tasks.base`. Registered: ``pretrain`` (:mod:`tfmkit.tasks.pretrain`).
"""

from tfmkit.tasks import pretrain as _pretrain  # noqa: F401  (registers the task)
from tfmkit.tasks import mlm as _mlm, multitask as _multitask  # noqa: F401  (register the tasks)
from tfmkit.tasks import autoregressive as _autoregressive  # noqa: F401
from tfmkit.tasks import celltype as _celltype  # noqa: F401  (fine-tuning: cell types)
from tfmkit.tasks import perturbation as _perturbation  # noqa: F401  (fine-tuning: perturbations)
from tfmkit.tasks.base import TASKS, Task, build_task, check_compatible, task_class

__all__ = ["TASKS", "Task", "build_task", "check_compatible", "task_class"]
