"""Which parameters a fine-tune trains (``train.freeze``), the same way for every model family.

Modes (``train.freeze``):

- ``full``: every model parameter is trained (with the task's own parameters);
- ``head``: the model is frozen; only the task's parameters (a classifier head, a fresh
  perturbation decoder) are trained;
- ``partial``: the last ``train.unfreeze_blocks`` transformer blocks are trained, together with
  every parameter registered *after* the first of them (the final norm, output heads).

Family-agnostic rule for ``partial``: a family's transformer blocks are its
:class:`torch.nn.ModuleList` holding the most parameters (TxFM ``encoder.blocks``, GPL-AR
``blocks``); "after" is ``named_parameters()`` order, which follows the forward order of every
family in tfmkit (embeddings, blocks, final norm, heads). A family whose registration order
differs can define ``finetune_blocks()`` returning its block list in forward order.
"""

from __future__ import annotations

from torch import nn

from tfmkit.errors import TfmkitError

FREEZE_MODES = ("full", "head", "partial")


def trunk_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks: ``model.finetune_blocks()`` if defined, else its
    :class:`~torch.nn.ModuleList` with the most parameters."""
    if hasattr(model, "finetune_blocks"):
        return model.finetune_blocks()
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise TfmkitError(f"model family {getattr(model.config, 'family', '?')!r} has no block list, so "
                          "train.freeze=partial is not defined for it; use full or head")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def apply_freeze(model: nn.Module, mode: str = "full", unfreeze_blocks: int = 1) -> int:
    """Set ``requires_grad`` of ``model``'s parameters for ``mode`` (see the module doc) and
    return the number of trainable model parameters."""
    if mode not in FREEZE_MODES:
        raise TfmkitError(f"train.freeze must be one of {', '.join(FREEZE_MODES)}, not {mode!r}")
    params = list(model.named_parameters())
    if mode == "full":
        trainable = {n for n, _ in params}
    elif mode == "head":
        trainable = set()
    else:
        blocks = trunk_blocks(model)
        if not 1 <= unfreeze_blocks <= len(blocks):
            raise TfmkitError(f"train.unfreeze_blocks must be between 1 and the model's {len(blocks)} "
                              f"blocks, not {unfreeze_blocks}")
        first = next(iter(blocks[len(blocks) - unfreeze_blocks].parameters()))
        start = next(i for i, (_, p) in enumerate(params) if p is first)
        trainable = {n for n, _ in params[start:]}
    for n, p in params:
        p.requires_grad_(n in trainable)
    return sum(p.numel() for n, p in params if n in trainable)
