"""AdamW parameter groups: only weight matrices are decayed (issue 12, item 3)."""

import torch
from torch import nn

from tfmkit.models import build_model
from tfmkit.optim import decayed_parameter_names, param_groups


def _linear_weights(model):
    """Brute force: names of the .weight of every nn.Linear, and in_proj_weight of attention."""
    out = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            out.add(f"{name}.weight")
        if isinstance(mod, nn.MultiheadAttention):
            out.add(f"{name}.in_proj_weight")
    return out


class _Task(nn.Module):
    def __init__(self):
        super().__init__()
        self.dispersion = nn.Parameter(torch.zeros(5))
        self.head = nn.Linear(4, 2)


def test_txfm_decays_exactly_its_linear_weights():
    m = build_model("tiny", 30)
    names = decayed_parameter_names(m)
    assert names == _linear_weights(m) and names
    params = dict(m.named_parameters())
    assert all(params[n].ndim == 2 for n in names)
    for kept in ("embed.gene.embedding.weight", "encoder.cls", "encoder.blocks.0.ls1.gamma",
                 "encoder.blocks.0.norm1.weight", "encoder.blocks.0.attn.qkv.bias"):
        assert kept in params and kept not in names


def test_param_groups_partition_model_and_task_once():
    m = build_model("tiny", 30)
    m.encoder.blocks[0].norm1.weight.requires_grad_(False)  # frozen parameters are left out
    task = _Task()
    groups = param_groups(m, task, 0.3)
    assert [g["name"] for g in groups] == ["decay", "no_decay", "task"]
    assert [g["weight_decay"] for g in groups] == [0.3, 0.0, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    want = [p for p in list(m.parameters()) + list(task.parameters()) if p.requires_grad]
    assert sorted(ids) == sorted(id(p) for p in want) and len(set(ids)) == len(ids)
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in task.parameters()}  # head undecayed


def test_adamw_with_groups_leaves_undecayed_parameters_alone():
    """With zero gradients, AdamW only applies decay: matrices shrink by (1 - lr*wd), the gene
    table and LayerScale do not move."""
    m = build_model("tiny", 30)
    opt = torch.optim.AdamW(param_groups(m, None, 0.5), lr=0.1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(m.named_parameters())
    for n in decayed_parameter_names(m):
        torch.testing.assert_close(after[n].detach(), before[n] * (1 - 0.1 * 0.5))
    for n in ("embed.gene.embedding.weight", "encoder.blocks.1.ls2.gamma", "encoder.cls"):
        assert torch.equal(after[n].detach(), before[n])
