"""Masked language modelling of expression and gene identity (BMFM-RNA §2.2.5, §2.3.1-2.3.2) —
the ``mlm`` task.

Batches come from :class:`tfmkit.data.collate_bmfm.MLMCollator`. Per cell (``T`` token slots,
``P`` = tokens whose value enters the loss, ``Q`` = gene-masked tokens; each mean is over the
cell's own positions, ``0`` when it has none):

- value loss ``value_loss``:

  - ``bins``: ``mean_{t in P} -log softmax(z_t)[b_t]`` over the ``value_bins`` logits, ``b_t`` the
    bin of the original-depth value (``binning``: ``log2`` or per-cell ``quantile``);
  - ``mse``: ``mean_{t in P} (v_t - x_t)^2`` with the ``value`` head ``v``;
  - ``zero_mse`` (BMFM's "is zero" + MSE): ``mean_{t in P} BCE(s_t, [x_t = 0]) +
    mean_{t in P, x_t > 0} (v_t - x_t)^2`` with the ``is_zero`` logit ``s`` (the MSE term is left
    out where the truth is 0, BMFM §2.3.1);

- masked-gene loss (``gene_mask_rate > 0``): ``gene_weight * mean_{t in Q} -log softmax(g_t)[i_t]``
  over the ``gene`` head's vocabulary logits, ``i_t`` the masked gene.

Options (``train.task_kwargs``, all optional): ``value_loss`` (``zero_mse``), ``mask_rate`` (0.15),
``keep_rate`` (0), ``gene_mask_rate`` (0), ``gene_weight`` (1), ``value_weight`` (1), ``binning``
(``log2``), ``rda`` (``null`` or ``{min_depth, keep_prob}``: RDA-downsampled input). ``train.objective``
must be ``mlm``. Tokens per cell: ``data.n_revealed``; ``data.expressed_only`` drops zero tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tfmkit.errors import TfmkitError
from tfmkit.tasks.base import TASKS, Task

VALUE_LOSSES = {"bins": ("value_bins",), "mse": ("value",), "zero_mse": ("value", "is_zero")}
OPTIONS = ("value_loss", "mask_rate", "keep_rate", "gene_mask_rate", "gene_weight", "value_weight",
           "binning", "rda")


def _masked_mean(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Per-row mean of ``x`` (B, T) over ``sel`` (B, T); 0 for a row with no selected entry."""
    sel = sel.to(x.dtype)
    return (x * sel).sum(-1) / sel.sum(-1).clamp_min(1.0)  # (B,)


def mlm_value_loss(token_outputs: dict, batch: dict, kind: str) -> torch.Tensor:
    """Per-cell masked-value loss ``(B,)`` of kind ``bins`` / ``mse`` / ``zero_mse`` (module docstring)."""
    from tfmkit.data.collate_bmfm import MLM_BIN_TARGET, MLM_VALUE_LOSS, MLM_VALUE_TARGET

    sel = batch[MLM_VALUE_LOSS].bool()  # (B, T)
    x = batch[MLM_VALUE_TARGET].float()  # (B, T)
    if kind == "bins":
        logits = token_outputs["value_bins"].float()  # (B, T, n_bins)
        ce = F.cross_entropy(logits.transpose(1, 2), batch[MLM_BIN_TARGET], reduction="none")  # (B, T)
        return _masked_mean(ce, sel)
    v = token_outputs["value"].float()  # (B, T)
    if kind == "mse":
        return _masked_mean((v - x).square(), sel)
    is_zero = (x <= 0).float()  # (B, T)
    bce = F.binary_cross_entropy_with_logits(token_outputs["is_zero"].float(), is_zero, reduction="none")  # (B, T)
    return _masked_mean(bce, sel) + _masked_mean((v - x).square(), sel & (x > 0))


def masked_gene_loss(token_outputs: dict, batch: dict) -> torch.Tensor:
    """Per-cell mean cross-entropy ``(B,)`` of the gene-identity logits at gene-masked tokens
    (dense ``token:gene`` (B, T, G), or ``token:gene_masked`` (N, G) at the masked tokens only)."""
    from tfmkit.data.collate_bmfm import MLM_GENE_TARGET

    y = batch[MLM_GENE_TARGET]  # (B, T) gene index, -1 = not masked
    sel = y >= 0  # (B, T)
    if "gene_masked" in token_outputs:  # logits of the masked tokens only, (N, G) in sel order
        ce = torch.zeros(y.shape, device=y.device)  # (B, T)
        ce[sel] = F.cross_entropy(token_outputs["gene_masked"].float(), y[sel], reduction="none")  # (N,)
    else:
        logits = token_outputs["gene"].float()  # (B, T, G)
        ce = F.cross_entropy(logits.transpose(1, 2), y.clamp_min(0), reduction="none")  # (B, T)
    return _masked_mean(ce, sel)


class MLMObjective(torch.nn.Module):
    """The MLM loss and its collators, shared by the ``mlm`` and ``multitask`` tasks."""

    def __init__(self, *, n_tokens: int, library_size: float, value_loss: str = "zero_mse",
                 mask_rate: float = 0.15, keep_rate: float = 0.0, gene_mask_rate: float = 0.0,
                 gene_weight: float = 1.0, value_weight: float = 1.0, binning: str = "log2",
                 rda: dict | None = None, n_bins: int | None = None, expressed_only: bool = False) -> None:
        super().__init__()
        if value_loss not in VALUE_LOSSES:
            raise TfmkitError(f"train.task_kwargs.value_loss must be one of {', '.join(VALUE_LOSSES)}, "
                              f"got {value_loss!r}")
        self.value_loss, self.gene_weight, self.value_weight = value_loss, float(gene_weight), float(value_weight)
        self.mask_rate, self.gene_mask_rate = float(mask_rate), float(gene_mask_rate)
        self.collator_kwargs = dict(
            mask_rate=mask_rate, keep_rate=keep_rate, gene_mask_rate=gene_mask_rate, rda=rda,
            n_bins=n_bins if value_loss == "bins" else None, binning=binning, expressed_only=expressed_only)
        self.n_tokens, self.library_size = int(n_tokens), float(library_size)
        from tfmkit.data.collate_bmfm import MLMCollator

        MLMCollator(self.n_tokens, self.library_size, **self.collator_kwargs)  # validate options now

    @classmethod
    def from_config(cls, cfg, kwargs: dict) -> "MLMObjective":
        """Build from a run config and the MLM options ``kwargs`` (checked: unknown keys fail)."""
        bad = sorted(set(kwargs) - set(OPTIONS))
        if bad:
            raise TfmkitError(f"unknown mlm option(s) {bad} in train.task_kwargs; valid: {sorted(OPTIONS)}")
        if cfg.data.tau != 0:
            raise TfmkitError("the mlm objective picks expressed genes first and ignores data.tau; set data.tau: 0")
        return cls(n_tokens=cfg.data.n_revealed, library_size=cfg.data.library_size,
                   n_bins=getattr(cfg.model, "n_bins", None), expressed_only=cfg.data.expressed_only,
                   **kwargs)

    @staticmethod
    def required_outputs(cfg, kwargs: dict) -> frozenset[str]:
        """``token:<head>`` outputs needed; also checks the model config builds those heads."""
        kind = kwargs.get("value_loss", "zero_mse")
        if kind not in VALUE_LOSSES:
            raise TfmkitError(f"train.task_kwargs.value_loss must be one of {', '.join(VALUE_LOSSES)}, "
                              f"got {kind!r}")
        heads = set(VALUE_LOSSES[kind]) | ({"gene"} if kwargs.get("gene_mask_rate", 0) > 0 else set())
        built = getattr(cfg.model, "token_heads", None)
        if built is not None and not heads <= set(built):
            raise TfmkitError(f"the mlm loss (value_loss {kind!r}, gene_mask_rate "
                              f"{kwargs.get('gene_mask_rate', 0)}) needs model.token_heads to include "
                              f"{sorted(heads - set(built))}; add them to model.token_heads")
        return frozenset({"token_states"} | {f"token:{h}" for h in heads})

    def collator(self, store=None):
        from tfmkit.data.collate_bmfm import MLMCollator

        return MLMCollator(self.n_tokens, self.library_size, **self.collator_kwargs)

    def inference_collator(self, n_revealed: int | None = None, *, reveal: str = "random",
                           context_fraction: float | None = None):
        """Unmasked, not downsampled tokens (``n_revealed`` of them, expressed genes first).

        ``reveal="top"`` (top-expressed context for reconstruction, GPL Suppl. D) is refused:
        MLM batches carry no whole-cell targets to reconstruct."""
        from tfmkit.data.collate_bmfm import MLMCollator
        from tfmkit.tasks.pretrain import check_reveal

        check_reveal(reveal, context_fraction)
        if reveal != "random":
            raise TfmkitError("the mlm objective predicts masked tokens, not the whole profile; "
                              "reveal='top' reconstruction needs a model with gene_logits (e.g. "
                              "bmfm with wced_head and train.objective wced_loss)")

        kw = dict(self.collator_kwargs, mask_rate=0.0, keep_rate=0.0, gene_mask_rate=0.0, rda=None, n_bins=None)
        return MLMCollator(int(n_revealed or self.n_tokens), self.library_size, **kw)

    def forward(self, output, batch: dict) -> torch.Tensor:
        """Per-cell MLM loss ``(B,)``."""
        loss = self.value_weight * mlm_value_loss(output.token_outputs, batch, self.value_loss)  # (B,)
        if self.gene_mask_rate > 0:
            loss = loss + self.gene_weight * masked_gene_loss(output.token_outputs, batch)  # (B,)
        return loss


@TASKS.register("mlm")
class MLMTask(Task):
    """Masked expression (and optionally masked gene) prediction; see the module docstring."""

    name = "mlm"

    def __init__(self, objective: MLMObjective) -> None:
        super().__init__()
        self.objective = objective

    @staticmethod
    def _check_objective(cfg) -> None:
        if cfg.train.objective != "mlm":
            raise TfmkitError(f"train.task 'mlm' trains train.objective 'mlm', not {cfg.train.objective!r}; "
                              "set train.objective: mlm (its options go in train.task_kwargs)")

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "MLMTask":
        cls._check_objective(cfg)
        return cls(MLMObjective.from_config(cfg, dict(cfg.train.task_kwargs)))

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        cls._check_objective(cfg)
        return MLMObjective.required_outputs(cfg, dict(cfg.train.task_kwargs))

    @classmethod
    def describe(cls, cfg) -> str:
        return f"train.task 'mlm' (value_loss {cfg.train.task_kwargs.get('value_loss', 'zero_mse')!r})"

    def collator(self, store):
        return self.objective.collator(store)

    def inference_collator(self, store, n_revealed: int | None = None, *, reveal: str = "random",
                           context_fraction: float | None = None):
        """:meth:`MLMObjective.inference_collator` (``reveal="top"`` is refused there)."""
        return self.objective.inference_collator(n_revealed, reveal=reveal, context_fraction=context_fraction)

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.objective(output, batch)  # (B,)
