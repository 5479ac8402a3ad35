"""Cell-type classification fine-tuning: a head on the cell embedding (issue 9 item 1).

The model's cell embedding (``pooling``: the ``cell`` state, the mean of the token states, or
both) feeds a linear or MLP head over ``classes``; the loss is cross-entropy, class-weighted
cross-entropy or the focal loss (Lin et al. 2017, ``FL = -w_y (1 - p_y)^gamma log p_y``).
With ``batch_key`` an adversary predicts each cell's batch from the embedding through a
gradient-reversal layer (Ganin & Lempitsky 2015; BMFM's batch-adversarial fine-tuning): the
adversary minimises its cross-entropy while the reversed gradient ``-lambda dL/de`` pushes the
encoder towards batch-invariant embeddings.

Batches come from the parent model's own task collator (any family) plus labels
(:class:`tfmkit.data.collate_labels.LabelCollator`); new cells are embedded exactly as the parent
embeds them (:meth:`CellTypeTask.inference_collator`), so ``tfmkit embed`` works on a fine-tuned
model. Options live in ``train.task_kwargs`` (written by :func:`tfmkit.finetune.finetune_celltype`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tfmkit.errors import TfmkitError
from tfmkit.models.grl import reverse_gradient
from tfmkit.models.protocol import POOLINGS, pool
from tfmkit.tasks.base import TASKS, Task
from tfmkit.tasks.finetuning import parent_task, stratified_split, task_options

HEADS = ("linear", "mlp")
LOSSES = ("ce", "weighted_ce", "focal")


@TASKS.register("celltype")
class CellTypeTask(Task):
    """Classify cells into ``classes`` from the model's cell embedding.

    Parameters
    ----------
    base
        The parent model's task; only its collators are used (not a submodule: its parameters
        are neither trained nor saved here).
    dim
        Width of the model's cell embedding ``D`` (``2D`` is used for ``cls+mean``).
    classes
        Class names; logits column ``c`` is ``classes[c]``.
    label_key
        ``obs`` column holding the labels.
    head
        ``linear`` or ``mlp`` (``D -> D``, GELU, dropout, ``-> C``), after a fixed
        standardisation of the embedding set from the first training batch (saved with the head).
    pooling
        ``cls``, ``mean`` or ``cls+mean`` (:meth:`~tfmkit.models.protocol.FoundationModel.cell_embedding`).
    loss
        ``ce``, ``weighted_ce`` (``class_weights``) or ``focal`` (weighted, ``focal_gamma``).
    class_weights
        ``(C,)`` weights ``w_c`` (e.g. balanced ``n / (C n_c)``); ones if ``None``.
    batch_key, batches, adversary_weight
        ``obs`` column, its categories and the reversal strength ``lambda`` of the batch
        adversary (no adversary when ``batches`` is empty).
    dropout
        Dropout on the embedding before the head.
    """

    name = "celltype"
    #: The loss reads only the cell / token states: the loop calls ``model.encode_cells``.
    encoder_only = True

    def __init__(self, base: Task, dim: int, classes, label_key: str, *, head: str = "linear",
                 pooling: str = "cls", loss: str = "weighted_ce", class_weights=None,
                 focal_gamma: float = 2.0, batch_key: str | None = None, batches=(),
                 adversary_weight: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__()
        if head not in HEADS or loss not in LOSSES or pooling not in POOLINGS:
            raise TfmkitError(f"celltype task: head must be one of {HEADS}, loss one of {LOSSES}, pooling "
                              f"one of {POOLINGS}; got {head!r}, {loss!r}, {pooling!r}")
        if len(classes) < 2:
            raise TfmkitError(f"cell-type fine-tuning needs at least 2 classes, got {list(classes)}")
        object.__setattr__(self, "_base", base)  # collators only; not a submodule
        self.classes = [str(c) for c in classes]
        self.label_key, self.pooling, self.loss_name = label_key, pooling, loss
        self.focal_gamma = float(focal_gamma)
        self.batch_key, self.batches = batch_key, [str(b) for b in batches]
        self.adversary_weight = float(adversary_weight)
        d = 2 * dim if pooling == "cls+mean" else dim
        C = len(self.classes)
        # feature-wise standardisation of the embedding, initialised from the first training
        # batch (ActNorm's data-dependent init, Kingma & Dhariwal 2018) and then fixed: a
        # pretrained CLS state varies little between cells next to its common direction, which
        # leaves a plain linear head crawling; fixed statistics keep training and inference equal
        self.register_buffer("emb_shift", torch.zeros(d))  # (D',)
        self.register_buffer("emb_scale", torch.ones(d))  # (D',)
        self.register_buffer("emb_initialised", torch.zeros((), dtype=torch.bool))
        self.dropout = nn.Dropout(dropout)
        self.head = (nn.Linear(d, C) if head == "linear" else
                     nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, C)))
        w = torch.ones(C) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if w.shape != (C,) or not bool((w > 0).all()):
            raise TfmkitError(f"class_weights must be {C} positive numbers, got {list(w.tolist())}")
        self.register_buffer("class_weights", w)  # (C,)
        self.adversary = (nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, len(self.batches)))
                          if len(self.batches) >= 2 else None)

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "CellTypeTask":
        kw = task_options(cfg, cls.name, {"classes", "label_key"},
                          "tfmkit.finetune.finetune_celltype or `tfmkit finetune celltype`")
        base = parent_task(cfg, n_genes, kw)
        kw.pop("n_dropped_unlabelled", None)
        return cls(base, int(cfg.model.dim), **kw)

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        pooling = cfg.train.task_kwargs.get("pooling", "cls")
        return frozenset({"cls": {"cell"}, "mean": {"token_states"}}.get(pooling, {"cell", "token_states"}))

    def collator(self, store):
        from tfmkit.data.collate_labels import LabelCollator, label_codes

        batches = label_codes(store, self.batch_key, self.batches) if self.adversary is not None else None
        return LabelCollator(self._base.collator(store), label_codes(store, self.label_key, self.classes),
                             batches)

    def inference_collator(self, store, n_revealed: int | None = None):
        """The parent's inference batches: a fine-tuned model embeds cells as its parent does."""
        return self._base.inference_collator(store, n_revealed)

    def split(self, store, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation cells stratified by batch x label: ``round(val_fraction * n)`` cells of every
        (``batch_key`` value, label) group, so each batch and class is seen by early stopping."""
        from tfmkit.data.collate_labels import label_codes

        groups = label_codes(store, self.label_key, self.classes)
        if self.batch_key is not None:
            b = store.obs[self.batch_key].astype(str).to_numpy()
            groups = np.unique(np.char.add(np.char.add(b.astype(str), "\x00"), groups.astype(str)),
                               return_inverse=True)[1]
        return stratified_split(groups, val_fraction, seed)

    def norm(self, emb: torch.Tensor) -> torch.Tensor:
        """``(emb - shift) * scale`` with shift/scale the mean / 1 / std of the first training batch."""
        if self.training and not bool(self.emb_initialised):
            with torch.no_grad():
                self.emb_shift.copy_(emb.mean(0))
                self.emb_scale.copy_(1.0 / (emb.std(0) + 1e-8))
                self.emb_initialised.fill_(True)
        return (emb - self.emb_shift) * self.emb_scale  # (B, D')

    def embedding(self, output) -> torch.Tensor:
        """``(B, D)`` (``(B, 2D)`` for ``cls+mean``) pooled cell embedding of a model output."""
        return pool(output, self.pooling).float()  # (B, D')

    def logits(self, output) -> torch.Tensor:
        """``(B, C)`` class logits (no dropout in eval mode)."""
        return self.head(self.dropout(self.norm(self.embedding(output))))  # (B, C)

    def loss(self, output, batch: dict) -> torch.Tensor:
        from tfmkit.data.collate_labels import BATCH_LABEL, LABEL

        emb = self.embedding(output)  # (B, D')
        y = batch[LABEL]  # (B,)
        known = (y >= 0).float()  # (B,)
        logits = self.head(self.dropout(self.norm(emb)))  # (B, C)
        nll = F.cross_entropy(logits, y.clamp_min(0), reduction="none")  # (B,)
        w = self.class_weights[y.clamp_min(0)] if self.loss_name != "ce" else torch.ones_like(nll)  # (B,)
        if self.loss_name == "focal":
            nll = (1.0 - torch.exp(-nll)) ** self.focal_gamma * nll  # (B,) focal modulation
        loss = w * nll * known  # (B,)
        if self.adversary is not None:
            b = batch[BATCH_LABEL]  # (B,)
            adv = self.adversary(reverse_gradient(self.norm(emb), self.adversary_weight))  # (B, n_batches)
            loss = loss + F.cross_entropy(adv, b.clamp_min(0), reduction="none") * (b >= 0).float()  # (B,)
        return loss
