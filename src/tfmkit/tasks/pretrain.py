"""Self-supervised pretraining: one registered task for every reconstruction objective.

``train.objective`` names a criterion of :mod:`tfmkit.criterion` (Poisson, GPL, NB, WCED, ...);
the batch is built by :class:`tfmkit.data.collate.PretrainCollator` with the run's reveal
sampling (``data.n_revealed`` / ``tau`` / ``expressed_only``) and normalisation target ``L``
(``data.library_size``).
"""

from __future__ import annotations

import torch

from tfmkit.tasks.base import TASKS, Task


@TASKS.register("pretrain")
class PretrainTask(Task):
    """Reconstruct the cell's expression from its revealed genes with ``train.objective``.

    Parameters
    ----------
    criterion
        The objective adapter (:func:`tfmkit.criterion.build_criterion`).
    reveal
        Which genes each cell reveals (:class:`tfmkit.data.masking.RevealSpec`).
    library_size
        Normalisation target ``L`` of the targets (TxFM eq. 3).
    """

    name = "pretrain"

    def __init__(self, criterion, reveal, library_size: float) -> None:
        super().__init__()
        self.criterion = criterion
        self.reveal = reveal
        self.library_size = float(library_size)

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "PretrainTask":
        from tfmkit.criterion import build_criterion

        criterion = build_criterion(cfg.train.objective, n_genes=n_genes,
                                    library_size=cfg.data.library_size, **cfg.train.objective_kwargs)
        return cls(criterion, cfg.data.reveal, cfg.data.library_size)

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        from tfmkit.criterion import CRITERIA
        from tfmkit.errors import TfmkitError

        if cfg.train.objective not in CRITERIA:
            raise TfmkitError(f"unknown train.objective {cfg.train.objective!r}; choose one of: "
                              f"{', '.join(CRITERIA.names())}")
        return frozenset(CRITERIA.get(cfg.train.objective).output_keys)

    @classmethod
    def describe(cls, cfg) -> str:
        return f"train.objective {cfg.train.objective!r}"

    def collator(self, store):
        from tfmkit.data.collate import PretrainCollator

        return PretrainCollator.for_store(store, self.reveal, self.library_size)

    def inference_collator(self, store, n_revealed: int | None = None):
        """The training reveal rule (K, expressed-only) and ``L``, uniform over the candidates:
        τ weights are a statistic of the training corpus and are not used on new cells."""
        from dataclasses import replace

        from tfmkit.data.collate import PretrainCollator

        spec = replace(self.reveal, tau=0.0, n_revealed=int(n_revealed or self.reveal.n_revealed))
        return PretrainCollator(spec, self.library_size)

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.criterion(output, batch)  # (B,)
