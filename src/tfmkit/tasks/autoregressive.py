"""Permuted-autoregressive ranking pretraining (GPL paper §4.1-4.2) — task ``gpl_ar``.

At every position ``t`` of a cell's permuted gene sequence the model gives a logit ``phi_{t,g}``
for every vocabulary gene ``g`` from the genes at positions ``<= t``. Per GPL §4.1 ("the training
signal at each position is the complete expression ranking of the cell — not just the identity
of the next gene") each position is scored with the exact :func:`tfmkit.objectives.gpl_nll` of
the **whole cell's ranking over its observable genes** (``target: full``, the default). With
``target: remaining`` the genes already in the prefix are left out of position ``t``'s ranking
(the conditional likelihood of the rest of the ranking; a variant, not the paper's recipe).

The loss is batched over positions x vocabulary: the ``P`` real (non-padded) positions of the
batch become ``P`` rows of one ``(P, G)`` call of the objective (cost ``O(P (G + S log S))``,
memory ``O(P G)``). A cell's loss is the mean over its positions. Options
(``train.objective_kwargs``): ``depth_shift`` (learned ``s0``, GPL §4.2.3:
``phi + s0 log(U / V)``), ``z_loss_weight`` (GPL §4.2.4, on the unshifted logits of every
position, over observable genes) and ``target``. ``train.objective`` may also name the other
count objectives with the same signature (``geometric_count_nll``, ``proportional_ce``) for
objective ablations at equal architecture.
"""

from __future__ import annotations

import torch
from torch import nn

from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.objectives import OBJECTIVES, depth_shift, z_loss
from tfmkit.tasks.base import TASKS, Task

AR_OBJECTIVES = ("gpl_nll", "geometric_count_nll", "proportional_ce")
TARGETS = ("full", "remaining")
OPTIONS = ("depth_shift", "z_loss_weight", "target")


@TASKS.register("gpl_ar")
class AutoregressiveTask(Task):
    """Per-position ranking likelihood of the whole cell (see the module docstring).

    Parameters
    ----------
    objective
        Name in :data:`AR_OBJECTIVES` (``gpl_nll``: GPL).
    n_tokens
        ``N`` expressed genes per cell (``data.n_revealed``).
    library_size
        Normalisation target ``L`` (``data.library_size``).
    model_config
        The ``gpl_ar`` family config (undetected fraction, AdaLN conditions).
    depth_shift, z_loss_weight, target
        See the module docstring.
    """

    name = "gpl_ar"

    def __init__(self, objective: str, n_tokens: int, library_size: float, model_config, *,
                 depth_shift: bool = False, z_loss_weight: float = 0.0, target: str = "full") -> None:
        super().__init__()
        _check_objective(objective)
        if target not in TARGETS:
            raise TfmkitError(f"train.objective_kwargs.target must be one of {TARGETS}, got {target!r}")
        if z_loss_weight < 0:
            raise TfmkitError(f"z_loss_weight must be >= 0, got {z_loss_weight}")
        self.objective_name = objective
        self.objective = OBJECTIVES.get(objective)
        self.n_tokens = int(n_tokens)
        self.library_size = float(library_size)
        self.undetected_fraction = float(getattr(model_config, "undetected_fraction", 0.1))
        self.conditions = dict(getattr(model_config, "conditions", {}) or {})
        self.condition_dropout = float(getattr(model_config, "condition_dropout", 0.0))
        self.z_loss_weight = float(z_loss_weight)
        self.target = target
        self.s0 = nn.Parameter(torch.ones(())) if depth_shift else None

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "AutoregressiveTask":
        kw = dict(cfg.train.objective_kwargs)
        bad = set(kw) - set(OPTIONS)
        if bad:
            raise TfmkitError(f"unknown train.objective_kwargs {sorted(bad)} for train.task 'gpl_ar'; "
                              f"valid: {list(OPTIONS)}")
        return cls(cfg.train.objective, cfg.data.n_revealed, cfg.data.library_size, cfg.model, **kw)

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        _check_objective(cfg.train.objective)
        return frozenset({"token:gene_logits"})

    @classmethod
    def describe(cls, cfg) -> str:
        return f"train.task 'gpl_ar' (objective {cfg.train.objective!r})"

    def collator(self, store):
        """Random-order sequences, strict conditioning, condition dropout (training)."""
        from tfmkit.data.collate_ar import AutoregressiveCollator

        return AutoregressiveCollator(self.n_tokens, self.undetected_fraction, self.library_size,
                                      conditions=self.conditions, condition_dropout=self.condition_dropout,
                                      order="random", strict=True)

    def inference_collator(self, store, n_revealed: int | None = None, *, reveal: str = "random",
                           context_fraction: float | None = None):
        """Descending-expression sequences (GPL Suppl. D.1); unseen conditioning categories map
        to *unknown*.

        ``reveal="random"``: up to ``n_revealed`` (default ``N``) expressed genes drawn at
        random, plus the undetected genes, sorted by descending expression (as in training but
        ordered). ``reveal="top"``: the head of the cell's full descending sequence, its
        ``round(context_fraction * #expressed)`` most expressed genes (all when ``None``), at
        most ``n_revealed`` (default ``N``), and no undetected genes; the model's ``gene_logits``
        are then the logits at the masking boundary (Suppl. D.1 step 3).
        """
        from tfmkit.data.collate_ar import AutoregressiveCollator
        from tfmkit.tasks.pretrain import check_reveal

        check_reveal(reveal, context_fraction)
        k = int(n_revealed or self.n_tokens)
        if reveal == "random":
            return AutoregressiveCollator(k, self.undetected_fraction, self.library_size,
                                          conditions=self.conditions, condition_dropout=0.0,
                                          order="descending", strict=False)
        whole = AutoregressiveCollator(store.vocab.n_genes, 0.0, self.library_size, conditions=self.conditions,
                                       condition_dropout=0.0, order="descending", strict=False)
        return TopPrefixCollator(whole, k, context_fraction)

    def loss(self, output, batch: dict) -> torch.Tensor:
        """Per-cell mean over positions of the objective of each position's logits ``(B,)``."""
        logits = output.get("token:gene_logits")  # (B, T, G)
        if logits is None:
            raise TfmkitError("train.task 'gpl_ar' needs per-position logits (token_outputs['gene_logits'])")
        n_cells, t, n_genes = logits.shape
        valid = ~batch[K.PADDING].bool()  # (B, T)
        rows = valid.nonzero()[:, 0]  # (P,) cell of each real position
        observable = batch[K.OBSERVABLE].bool()  # (B, G)
        counts = batch[K.COUNTS]  # (B, G)
        phi = logits[valid]  # (P, G)
        obs_p = observable.index_select(0, rows)  # (P, G)
        mask = obs_p
        if self.target == "remaining":
            mask = obs_p & ~seen_genes(batch[K.GENE_IDS], valid, n_genes)[valid]  # (P, G)
        shifted = phi.float()
        if self.s0 is not None:
            u = batch[K.LIBRARY_SIZE].index_select(0, rows)  # (P,)
            shifted = depth_shift(phi, u, obs_p.sum(-1), self.s0)  # (P, G)
        per_pos = self.objective(shifted, counts.index_select(0, rows), mask=mask)  # (P,)
        if self.z_loss_weight > 0:
            per_pos = per_pos + z_loss(phi, obs_p, self.z_loss_weight)  # (P,)
        total = torch.zeros(n_cells, dtype=per_pos.dtype, device=per_pos.device).index_add_(0, rows, per_pos)
        return total / valid.sum(1).clamp_min(1).to(total.dtype)  # (B,)

    def extra_repr(self) -> str:
        return (f"{self.objective_name}, N={self.n_tokens}, target={self.target!r}, "
                f"z_loss_weight={self.z_loss_weight}, depth_shift={self.s0 is not None}")


class TopPrefixCollator:
    """The first ``n`` tokens of each cell's whole descending-expression sequence (``base``: an
    :class:`~tfmkit.data.collate_ar.AutoregressiveCollator` over every expressed gene, order
    ``descending``, no undetected genes): ``n`` from
    :func:`tfmkit.tasks.pretrain.context_sizes`. Later tokens become padding (cut when no cell
    uses them); ``REVEALED`` marks the kept genes, so they equal
    :func:`tfmkit.tasks.pretrain.top_expressed` of the cell (ties by vocabulary index)."""

    def __init__(self, base, max_tokens: int, context_fraction: float | None = None) -> None:
        self.base = base
        self.fields = tuple(base.fields)
        self.reveal = base.reveal
        self.max_tokens = int(max_tokens)
        self.context_fraction = None if context_fraction is None else float(context_fraction)

    def __repr__(self) -> str:
        return (f"TopPrefixCollator(max_tokens={self.max_tokens}, "
                f"context_fraction={self.context_fraction})")

    def __call__(self, store, cell_idx, generator) -> dict:
        from tfmkit.data.collate_ar import RANKS
        from tfmkit.data.vocab import GeneVocab
        from tfmkit.tasks.pretrain import context_sizes

        batch = dict(self.base(store, cell_idx, generator))
        valid = ~batch[K.PADDING].bool()  # (B, T) left-aligned
        counts, observable = batch[K.COUNTS], batch[K.OBSERVABLE].bool()  # (B, G) x2
        n = context_sizes((observable & (counts > 0)).sum(1), self.max_tokens, self.context_fraction)  # (B,)
        keep = valid & (torch.arange(valid.shape[1])[None, :] < n[:, None])  # (B, T)
        t = int(keep.sum(1).max()) if keep.numel() else 0
        keep = keep[:, :t]  # (B, T')
        ids = batch[K.GENE_IDS][:, :t].masked_fill(~keep, GeneVocab.PAD)  # (B, T')
        gene = (ids - GeneVocab.N_SPECIAL).clamp_min(0)  # (B, T')
        revealed = torch.zeros(counts.shape, dtype=torch.int32).scatter_add_(1, gene, keep.int()) > 0  # (B, G)
        batch.update({K.GENE_IDS: ids, K.VALUES: batch[K.VALUES][:, :t] * keep,
                      K.PADDING: ~keep, K.REVEALED: revealed,
                      RANKS: batch[RANKS][:, :t].masked_fill(~keep, 0.0)})
        return batch


def seen_genes(gene_ids: torch.Tensor, valid: torch.Tensor, n_genes: int) -> torch.Tensor:
    """``(B, T, G)`` bool: gene ``g`` is at a position ``<= t`` of the sequence.

    ``gene_ids`` ``(B, T)`` token ids (``N_SPECIAL + gene index``), ``valid`` ``(B, T)``.
    """
    from tfmkit.data.vocab import GeneVocab

    n_cells, t = gene_ids.shape
    gene = (gene_ids - GeneVocab.N_SPECIAL).clamp(0, n_genes - 1)  # (B, T)
    pos = torch.arange(t, device=gene_ids.device).expand(n_cells, t)  # (B, T)
    pos = torch.where(valid, pos, torch.full_like(pos, t))  # padded slots never count
    first = torch.full((n_cells, n_genes), t, dtype=torch.long, device=gene_ids.device)  # (B, G)
    first = first.scatter_reduce(1, gene, pos, reduce="amin")  # (B, G) position of each gene
    return first[:, None, :] <= torch.arange(t, device=gene_ids.device)[None, :, None]  # (B, T, G)


def _check_objective(name: str) -> None:
    if name not in AR_OBJECTIVES:
        raise TfmkitError(f"train.task 'gpl_ar' scores with one of {', '.join(AR_OBJECTIVES)}, "
                          f"not train.objective {name!r}; set train.objective: gpl_nll")
