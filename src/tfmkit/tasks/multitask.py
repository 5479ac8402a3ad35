"""Multitask pretraining (BMFM-RNA §2.2.5 "cell-level metadata prediction", §2.3.2-2.3.3) — the
``multitask`` task.

Per cell the loss is

``objective_weight * L_self + sum_l w_l L_l(head_l(e)) + sum_a w_a CE(adv_a(GRL_lambda_a(e)))``

with ``e`` the model's cell embedding (``cell``, the CLS state), ``L_self`` the self-supervised
objective named by ``train.objective`` — ``mlm`` (:class:`tfmkit.tasks.mlm.MLMObjective`, options in
``train.task_kwargs.mlm``), any criterion of :mod:`tfmkit.criterion` (e.g. ``wced_loss``, options in
``train.objective_kwargs``; batches of :class:`~tfmkit.data.collate.PretrainCollator`) or ``none`` —
``L_l`` cross-entropy or the focal loss ``-(1 - p_y)^gamma log p_y`` (Lin et al. 2020) of a label
head, and ``adv_a`` an adversarial classifier (batch, donor) behind a gradient-reversal layer
(:mod:`tfmkit.models.grl`): it learns to predict the batch while the encoder receives the reversed
gradient. Heads are two-layer MLPs (``D -> D -> C``) and are parameters of this task (trained and
checkpointed with it).

Options (``train.task_kwargs``)::

    labels:          # head name -> spec
      cell_type: {column: [cell_type, cell_type_derived], loss: ce|focal, gamma: 2.0, weight: 1.0,
                  n_classes: 32, classes: null}
    adversarial:
      batch: {column: [donor_id, patient, batch], weight: 1.0, lambda: 1.0, n_classes: 32, classes: null}
    objective_weight: 1.0
    mlm: {...}       # MLM options when train.objective is mlm

``column`` is an ``obs`` column or a list of alternatives (the first present in the training data is
used; none present is a one-line error).

**How classes are fixed.** ``classes`` listed in the spec are used as given (``n_classes`` =
their number). Otherwise a head has ``n_classes`` output slots and its class list is fixed the
first time the task builds its training collator: the sorted distinct values of the column in the
training corpus (more than ``n_classes`` is an error). The list is stored in the task's state (a
``(n_classes, 64)`` byte table saved in ``criterion.safetensors`` with the heads), so a resumed or
reloaded run keeps the same codes and the run config is never rewritten.
:meth:`MultitaskTask.classes` returns the list.

**Missing and unseen labels.** A cell whose value is missing (NaN) gets code ``-1`` and contributes
nothing to that head's loss (its other terms still count). A value outside a fixed class list
(e.g. resuming on other data) is treated the same way, with a warning naming how many cells.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from tfmkit.errors import TfmkitError
from tfmkit.models.grl import reverse_gradient
from tfmkit.tasks.base import TASKS, Task

NAME_BYTES = 64
LABEL_LOSSES = ("ce", "focal")
LABEL_OPTIONS = {"column", "loss", "gamma", "weight", "n_classes", "classes"}
ADV_OPTIONS = {"column", "weight", "lambda", "n_classes", "classes"}
TASK_OPTIONS = {"labels", "adversarial", "objective_weight", "mlm"}


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Softmax focal loss ``-(1 - p_y)^gamma log p_y`` per row (Lin et al. 2020) -> ``(B,)``;
    ``gamma = 0`` is cross-entropy. ``logits`` (B, C), ``y`` (B,) valid class indices."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, y[:, None]).squeeze(1)  # (B,)
    return -(1.0 - logp.exp()).clamp_min(0.0) ** gamma * logp


class ClassifierHead(nn.Module):
    """``D -> D -> C`` MLP over the cell embedding plus its class-name table (``C`` x 64 bytes)."""

    def __init__(self, dim: int, n_classes: int, classes=None) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, n_classes))
        self.register_buffer("names", torch.zeros(n_classes, NAME_BYTES, dtype=torch.uint8))  # (C, 64)
        if classes is not None:
            self.set_classes(classes)

    @property
    def n_classes(self) -> int:
        return int(self.names.shape[0])

    def classes(self) -> list[str]:
        """The fixed class list (empty until fixed); logit column ``c`` is ``classes()[c]``."""
        rows = self.names.cpu().numpy()
        return [bytes(r).rstrip(b"\0").decode("utf-8") for r in rows if r[0] != 0]

    def set_classes(self, classes) -> None:
        """Fix the class list (at most ``n_classes`` non-empty names of <= 64 UTF-8 bytes)."""
        enc = [str(c).encode("utf-8") for c in classes]
        if len(enc) > self.n_classes:
            raise TfmkitError(f"{len(enc)} classes do not fit {self.n_classes} output slots; raise n_classes")
        if any(len(b) == 0 or len(b) > NAME_BYTES for b in enc):
            raise TfmkitError(f"class names must be 1-{NAME_BYTES} UTF-8 bytes long; shorten or recode them")
        table = torch.zeros_like(self.names)
        for i, b in enumerate(enc):
            table[i, :len(b)] = torch.tensor(list(b), dtype=torch.uint8)
        self.names.copy_(table)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.mlp(e)  # (B, C)


def _check_spec(kind: str, name: str, spec, allowed: set) -> dict:
    if not isinstance(spec, dict) or "column" not in spec:
        raise TfmkitError(f"train.task_kwargs.{kind}.{name} must be a mapping with a column (obs column name)")
    bad = sorted(set(spec) - allowed)
    if bad:
        raise TfmkitError(f"unknown option(s) {bad} in train.task_kwargs.{kind}.{name}; valid: {sorted(allowed)}")
    return dict(spec)


@TASKS.register("multitask")
class MultitaskTask(Task):
    """Self-supervised objective + label heads + adversarial heads (see the module docstring)."""

    name = "multitask"

    def __init__(self, base, dim: int, labels: dict, adversarial: dict, objective_weight: float = 1.0,
                 reveal=None, library_size: float = 1e5) -> None:
        super().__init__()
        self.base = base  # MLMObjective, a PretrainTask (criterion) or None
        self.reveal, self.library_size = reveal, float(library_size)  # inputs when base is None
        self.objective_weight = float(objective_weight)
        self.specs: dict[str, dict] = {}
        heads, advs = {}, {}
        for kind, table, out in (("labels", labels, heads), ("adversarial", adversarial, advs)):
            for name, spec in (table or {}).items():
                spec = _check_spec(kind, name, spec, LABEL_OPTIONS if kind == "labels" else ADV_OPTIONS)
                if name in self.specs:
                    raise TfmkitError(f"head name {name!r} is used twice in train.task_kwargs")
                if spec.get("loss", "ce") not in LABEL_LOSSES:
                    raise TfmkitError(f"train.task_kwargs.labels.{name}.loss must be ce or focal, got {spec['loss']!r}")
                classes = spec.get("classes")
                n = len(classes) if classes is not None else int(spec.get("n_classes", 32))
                if n < 2:
                    raise TfmkitError(f"head {name!r} needs at least 2 classes, got {n}")
                self.specs[name] = dict(spec, kind=kind)
                out[name] = ClassifierHead(dim, n, classes)
        if not self.specs and base is None:
            raise TfmkitError("train.task 'multitask' has nothing to train: name train.task_kwargs.labels / "
                              "adversarial heads or a train.objective")
        self.heads = nn.ModuleDict(heads)
        self.adversaries = nn.ModuleDict(advs)

    # ---- construction ---------------------------------------------------------------------
    @staticmethod
    def _kwargs(cfg) -> dict:
        kw = dict(cfg.train.task_kwargs)
        bad = sorted(set(kw) - TASK_OPTIONS)
        if bad:
            raise TfmkitError(f"unknown multitask option(s) {bad} in train.task_kwargs; valid: {sorted(TASK_OPTIONS)}")
        if "mlm" in kw and cfg.train.objective != "mlm":
            raise TfmkitError("train.task_kwargs.mlm applies with train.objective: mlm only; remove it")
        return kw

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "MultitaskTask":
        from tfmkit.tasks.mlm import MLMObjective
        from tfmkit.tasks.pretrain import PretrainTask

        kw = cls._kwargs(cfg)
        if cfg.train.objective == "mlm":
            base = MLMObjective.from_config(cfg, dict(kw.get("mlm") or {}))
        elif cfg.train.objective == "none":
            base = None
        else:
            base = PretrainTask.from_config(cfg, n_genes)
        if not hasattr(cfg.model, "dim"):
            raise TfmkitError(f"train.task 'multitask' needs the model width model.dim; family "
                              f"{cfg.model.family!r} has none")
        return cls(base, int(cfg.model.dim), kw.get("labels") or {}, kw.get("adversarial") or {},
                   kw.get("objective_weight", 1.0), cfg.data.reveal, cfg.data.library_size)

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        from tfmkit.tasks.mlm import MLMObjective
        from tfmkit.tasks.pretrain import PretrainTask

        kw = cls._kwargs(cfg)
        if cfg.train.objective == "mlm":
            base = MLMObjective.required_outputs(cfg, dict(kw.get("mlm") or {}))
        elif cfg.train.objective == "none":
            base = frozenset()
        else:
            base = PretrainTask.required_outputs(cfg)
        return frozenset({"cell"}) | base

    @classmethod
    def describe(cls, cfg) -> str:
        return f"train.task 'multitask' (objective {cfg.train.objective!r})"

    # ---- data -----------------------------------------------------------------------------
    def _all_heads(self) -> dict[str, ClassifierHead]:
        return {**dict(self.heads.items()), **dict(self.adversaries.items())}

    def classes(self, name: str) -> list[str]:
        """The fixed class list of head ``name`` (empty before the first training collator)."""
        return self._all_heads()[name].classes()

    def _base_collator(self, store):
        if self.base is None:
            from tfmkit.data.collate import PretrainCollator
            from tfmkit.data.masking import RevealSpec

            return PretrainCollator.for_store(store, self.reveal or RevealSpec(), self.library_size)
        return self.base.collator(store)

    def collator(self, store):
        """The base objective's batches plus ``label:<head>`` codes; fixes class lists (see above)."""
        from tfmkit.data.collate_bmfm import LabelCollator, encode_labels, label_categories, resolve_column

        codes = {}
        for name, head in self._all_heads().items():
            spec = self.specs[name]
            col = resolve_column(store.obs, spec["column"], f"head {name!r} of train.task 'multitask'")
            values = store.obs[col]
            if not head.classes():
                found = label_categories(values)
                if len(found) > head.n_classes:
                    raise TfmkitError(f"obs column {col!r} has {len(found)} classes but head {name!r} has "
                                      f"{head.n_classes} slots; raise train.task_kwargs.{spec['kind']}.{name}.n_classes")
                head.set_classes(found)
            codes[name] = encode_labels(values, head.classes())
            known = codes[name] >= 0
            if not known.any():
                raise TfmkitError(f"no cell has a {col!r} value among head {name!r}'s classes; label the cells "
                                  "or drop the head")
            unseen = int((~known & values.notna().to_numpy()).sum())
            if unseen:
                print(f"warning: {unseen} cells have {col!r} values outside head {name!r}'s classes; "
                      "they are ignored by that head", file=sys.stderr)
        return LabelCollator(self._base_collator(store), codes)

    def inference_collator(self, store, n_revealed: int | None = None, *, reveal: str = "random",
                           context_fraction: float | None = None):
        """New cells are embedded with the base objective's inference batches (no labels);
        ``reveal`` / ``context_fraction`` as in :meth:`tfmkit.tasks.pretrain.PretrainTask.inference_collator`."""
        from tfmkit.tasks.pretrain import PretrainTask, TopRevealCollator, check_reveal

        check_reveal(reveal, context_fraction)
        if self.base is None:
            from tfmkit.data.collate import PretrainCollator
            from tfmkit.data.masking import RevealSpec

            spec = self.reveal or RevealSpec()
            k = int(n_revealed or spec.n_revealed)
            collate = PretrainCollator(RevealSpec(n_revealed=k, expressed_only=spec.expressed_only), self.library_size)
            return collate if reveal == "random" else TopRevealCollator(collate, k, context_fraction)
        if isinstance(self.base, PretrainTask):
            return self.base.inference_collator(store, n_revealed, reveal=reveal, context_fraction=context_fraction)
        return self.base.inference_collator(n_revealed, reveal=reveal, context_fraction=context_fraction)

    # ---- loss -----------------------------------------------------------------------------
    def head_losses(self, output, batch: dict) -> dict[str, torch.Tensor]:
        """Per-cell ``(B,)`` weighted loss of every label and adversarial head (0 where unknown)."""
        from tfmkit.data.collate_bmfm import label_key

        e = output.cell.float()  # (B, D)
        losses = {}
        for name, head in self._all_heads().items():
            spec = self.specs[name]
            y = batch[label_key(name)]  # (B,)
            if spec["kind"] == "adversarial":
                logits = head(reverse_gradient(e, float(spec.get("lambda", 1.0))))  # (B, C)
                gamma = 0.0
            else:
                logits = head(e)  # (B, C)
                gamma = float(spec.get("gamma", 2.0)) if spec.get("loss", "ce") == "focal" else 0.0
            per = focal_loss(logits, y.clamp_min(0), gamma)  # (B,)
            losses[name] = float(spec.get("weight", 1.0)) * per * (y >= 0).to(per.dtype)  # (B,)
        return losses

    def loss(self, output, batch: dict) -> torch.Tensor:
        total = torch.zeros(output.cell.shape[0], device=output.cell.device)  # (B,)
        if self.base is not None:
            from tfmkit.tasks.pretrain import PretrainTask

            base = self.base.loss(output, batch) if isinstance(self.base, PretrainTask) else self.base(output, batch)
            total = total + self.objective_weight * base.float()  # (B,)
        for per in self.head_losses(output, batch).values():
            total = total + per  # (B,)
        return total
