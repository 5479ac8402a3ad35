"""Self-supervised pretraining: one registered task for every reconstruction objective.

``train.objective`` names a criterion of :mod:`tfmkit.criterion` (Poisson, GPL, NB, WCED, ...);
the batch is built by :class:`tfmkit.data.collate.PretrainCollator` with the run's reveal
sampling (``data.n_revealed`` / ``tau`` / ``expressed_only``) and normalisation target ``L``
(``data.library_size``).

Reconstruction evaluation (GPL Suppl. D) reveals each cell's **top-expressed** genes instead
(``reveal="top"`` of :meth:`PretrainTask.inference_collator`): :func:`top_expressed` picks them
and :class:`TopRevealCollator` swaps them into any collator that emits the pretraining fields.
"""

from __future__ import annotations

import math

import torch

from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.tasks.base import TASKS, Task

#: How an inference collator picks the genes a cell shows the model: ``random`` = the training
#: reveal rule; ``top`` = the cell's highest-count genes (GPL Suppl. D.1).
REVEAL_MODES = ("random", "top")


def check_reveal(reveal: str, context_fraction: float | None) -> None:
    """Refuse an unknown reveal mode, or a ``context_fraction`` outside ``(0, 1]`` or without
    ``reveal="top"``."""
    if reveal not in REVEAL_MODES:
        raise TfmkitError(f"reveal must be one of {', '.join(REVEAL_MODES)}, got {reveal!r}")
    if context_fraction is not None:
        if reveal != "top":
            raise TfmkitError("context_fraction applies to reveal='top' (a fraction of each cell's "
                              "expressed genes); pass reveal='top' or drop context_fraction")
        if not 0 < float(context_fraction) <= 1:
            raise TfmkitError(f"context_fraction must be in (0, 1], got {context_fraction}")


def context_sizes(n_expressed: torch.Tensor, max_tokens: int,
                  context_fraction: float | None) -> torch.Tensor:
    """Genes revealed per cell in ``top`` mode ``(B,)`` int64: ``floor(f * n_e + 1/2)`` of its
    ``n_e`` expressed genes (``f = context_fraction``; all ``n_e`` when ``None``), at least 1 and
    at most ``max_tokens``."""
    n = n_expressed.long()  # (B,)
    if context_fraction is not None:
        n = torch.floor(n.double() * float(context_fraction) + 0.5).long()  # (B,)
    return n.clamp(min=1, max=int(max_tokens))


def top_expressed(counts: torch.Tensor, observable: torch.Tensor, n: torch.Tensor):
    """Each cell's ``n[b]`` highest-count observable genes in descending count order, ties by
    vocabulary index (GPL Suppl. D.1: the context is the head of the descending-expression
    sequence). Only expressed genes (count > 0) are taken, except that a cell with none shows
    one observable zero gene (so no sequence is empty).

    ``counts``/``observable`` ``(B, G)``, ``n`` ``(B,)``. Returns ``idx`` ``(B, T)`` int64 gene
    indices (0 where padded) and ``valid`` ``(B, T)`` bool, ``T = max`` revealed per cell.
    """
    obs = observable.bool()  # (B, G)
    expressed = obs & (counts > 0)  # (B, G)
    n_expr = expressed.sum(1)  # (B,)
    cand = torch.where((n_expr > 0)[:, None], expressed, obs)  # (B, G)
    take = torch.minimum(n.long(), cand.sum(1))  # (B,)
    t = int(take.max()) if take.numel() else 0
    key = counts.double().masked_fill(~cand, -math.inf)  # (B, G)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :t]  # (B, T)
    valid = torch.arange(t)[None, :] < take[:, None]  # (B, T)
    return order.masked_fill(~valid, 0), valid


class TopRevealCollator:
    """Wraps a collator emitting :data:`tfmkit.data.keys.PRETRAIN_FIELDS` and replaces its
    revealed tokens (``GENE_IDS``, ``VALUES``, ``PADDING``, ``REVEALED``) by each cell's
    top-expressed genes (:func:`top_expressed`, :func:`context_sizes`); targets, counts and
    every other field are the base collator's. Deterministic: the generator only feeds the base.
    """

    def __init__(self, base, max_tokens: int, context_fraction: float | None = None) -> None:
        missing = [k for k in (K.COUNTS, K.OBSERVABLE, K.TARGET) if k not in getattr(base, "fields", ())]
        if missing:
            raise TfmkitError(f"reveal='top' needs batches with {', '.join(missing)}; "
                              f"{type(base).__name__} does not emit them")
        check_reveal("top", context_fraction)
        self.base = base
        self.fields = tuple(base.fields)
        self.per_cell_generators = bool(getattr(base, "per_cell_generators", False))
        self.reveal = getattr(base, "reveal", None)
        self.max_tokens = int(max_tokens)
        self.context_fraction = None if context_fraction is None else float(context_fraction)

    def __repr__(self) -> str:
        return (f"TopRevealCollator({self.base!r}, max_tokens={self.max_tokens}, "
                f"context_fraction={self.context_fraction})")

    def __call__(self, store, cell_idx, generator) -> dict:
        from tfmkit.data.transforms import revealed_tokens

        batch = dict(self.base(store, cell_idx, generator))
        counts, observable = batch[K.COUNTS], batch[K.OBSERVABLE].bool()  # (B, G) x2
        n = context_sizes((observable & (counts > 0)).sum(1), self.max_tokens, self.context_fraction)  # (B,)
        idx, valid = top_expressed(counts, observable, n)  # (B, T) x2
        ids, values, padding, revealed = revealed_tokens(batch[K.TARGET], idx, valid)  # (B, T) x3, (B, G)
        batch.update({K.GENE_IDS: ids, K.VALUES: values, K.PADDING: padding, K.REVEALED: revealed})
        return batch


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

    def inference_collator(self, store, n_revealed: int | None = None, *, reveal: str = "random",
                           context_fraction: float | None = None):
        """The training reveal rule (K, expressed-only) and ``L``, uniform over the candidates:
        τ weights are a statistic of the training corpus and are not used on new cells.

        ``reveal="top"``: each cell instead shows its top-expressed genes (GPL Suppl. D.1),
        ``round(context_fraction * #expressed)`` of them (all expressed genes when ``None``),
        at most ``n_revealed`` (default the training ``K``); see :class:`TopRevealCollator`.
        """
        from dataclasses import replace

        from tfmkit.data.collate import PretrainCollator

        check_reveal(reveal, context_fraction)
        k = int(n_revealed or self.reveal.n_revealed)
        collate = PretrainCollator(replace(self.reveal, tau=0.0, n_revealed=k), self.library_size)
        return collate if reveal == "random" else TopRevealCollator(collate, k, context_fraction)

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.criterion(output, batch)  # (B,)
