"""Fine-tuning on the task seam (issue 9): every fine-tune is a run of the one training loop
(:func:`tfmkit.training.pretrain`) started from a parent model (``train.init_from``) with a
fine-tuning task, and writes a normal model directory that records its parent and task.

- :func:`finetune_celltype` / :func:`predict` — classifier head on the cell embedding;
- :func:`finetune_ssl` — continue the parent's own pretraining objective on the target cells;

Freezing modes (``head`` / ``full`` / ``partial``) are in :mod:`tfmkit.finetune.freeze`.
"""

from tfmkit.finetune.celltype import finetune_celltype
from tfmkit.finetune.predict import predict, predict_proba
from tfmkit.finetune.ssl import finetune_ssl

__all__ = ["finetune_celltype", "finetune_ssl", "predict", "predict_proba"]
