"""AdamW parameter groups: weight decay on weight matrices only (issue 12, item 3).

TxFM decays every parameter with ``lambda = 1 / (lr T)`` (§A.1). Decay is a prior on the
*scale* of linear maps; applied to an embedding table it shrinks gene vectors towards zero
(rows of rarely revealed genes get almost no gradient and decay away), and applied to LayerNorm
gains, biases, LayerScale gammas or the CLS token it pulls them to a degenerate value rather
than regularising anything. :func:`param_groups` therefore decays only the ``weight`` matrices
of linear layers (``nn.Linear`` and subclasses, the 2-D ``in_proj_weight`` of
``nn.MultiheadAttention``) and leaves every other model parameter, and every task parameter
(NB dispersion, GPL depth shift, classifier heads' learned loss parameters), undecayed — the
usual practice of BERT/ViT/GPT training code (e.g. nanoGPT's ``configure_optimizers``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["decayed_parameter_names", "param_groups"]

#: Modules whose 2-D ``weight`` is a linear map (decayed); everything else is not.
LINEAR_TYPES = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def decayed_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the parameters :func:`param_groups` decays:
    the ``weight`` of every linear/convolution layer and the ``in_proj_weight`` of every
    ``nn.MultiheadAttention``. Embedding tables, norms, biases, LayerScale, CLS and other free
    ``nn.Parameter`` tensors are not decayed."""
    names = set()
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for p_name, p in mod.named_parameters(recurse=False):
            linear = isinstance(mod, LINEAR_TYPES) and p_name == "weight"
            attn = isinstance(mod, nn.MultiheadAttention) and p_name == "in_proj_weight"
            if (linear or attn) and p.ndim >= 2:
                names.add(prefix + p_name)
    return names


def param_groups(model: nn.Module, task: nn.Module | None, weight_decay: float) -> list[dict]:
    """AdamW groups ``[decayed, undecayed model, task]`` for ``torch.optim.AdamW(groups, ...)``.

    Only trainable parameters (``requires_grad``) are included, each exactly once (a parameter
    shared by model and task goes with the model). Groups: the weight matrices of
    :func:`decayed_parameter_names` with ``weight_decay``; every other model parameter with
    decay 0; the task's own parameters with decay 0. Empty groups are dropped.
    """
    decayed = decayed_parameter_names(model)
    seen: set[int] = set()
    groups = {"decay": [], "no_decay": [], "task": []}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups["decay" if name in decayed else "no_decay"].append(p)
    for p in (task.parameters() if task is not None else ()):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups["task"].append(p)
    out = [{"params": groups["decay"], "weight_decay": float(weight_decay), "name": "decay"},
           {"params": groups["no_decay"], "weight_decay": 0.0, "name": "no_decay"},
           {"params": groups["task"], "weight_decay": 0.0, "name": "task"}]
    return [g for g in out if g["params"]]
