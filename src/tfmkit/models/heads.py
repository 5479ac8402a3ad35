"""Decoder heads. TxFM: MLP from the final CLS embedding to every vocabulary gene (§3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfmkit.registry import Registry

HEADS: Registry = Registry("head")


class ResidualMlpLayer(nn.Module):
    """``h + W2 GELU(W1 LN(h))``: one residual layer of the TxFM decoder MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.gelu(self.fc1(self.norm(h))))  # (B, H)


@HEADS.register("cls_mlp")
class ClsDecoder(nn.Module):
    """TxFM count decoder ``z = MLP(e_CLS)`` giving one logit per vocabulary gene.

    ``n_layers = 0`` is the linear decoder of TxFM Table 5(e); otherwise the CLS embedding is
    projected to ``hidden`` and passed through ``n_layers`` residual MLP layers before the
    per-gene output layer ``W_out (G, hidden)`` whose rows are the *decoder gene weights* used by
    ``gene_embeddings(kind="decoder")``. The output activation is applied by the model.
    """

    def __init__(self, dim: int, n_genes: int, n_layers: int = 4, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        if n_layers == 0:
            self.inp = nn.Identity()
            hidden = dim
        else:
            self.inp = nn.Linear(dim, hidden)
        self.layers = nn.Sequential(*[ResidualMlpLayer(hidden) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(hidden) if n_layers else nn.Identity()
        self.out = nn.Linear(hidden, n_genes)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.inp(cls))  # (B, H)
        return self.out(self.norm(h))  # (B, G)

    def gene_table(self) -> torch.Tensor:
        """``(G, hidden)`` decoder weights, one row per gene."""
        return self.out.weight
