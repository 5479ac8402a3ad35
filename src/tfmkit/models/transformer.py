"""Set transformer encoder with a learnable CLS token (TxFM §3 "Model")."""

from __future__ import annotations

import torch
from torch import nn

from tfmkit.models.blocks import Block


class SetEncoder(nn.Module):
    """Pre-LN transformer over ``K`` gene tokens plus one CLS token; no positional encoding.

    ``forward(tokens (B, K, D), padding (B, K) bool) -> hidden (B, K + 1, D)`` with the CLS state
    at index 0, after a final LayerNorm. Padding slots are excluded from attention as keys.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, layerscale_init: float | None = 1e-1,
                 qk_norm: bool = False) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls, std=0.02)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear stochastic-depth ramp
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, rates[i], layerscale_init, qk_norm) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        B = tokens.shape[0]
        x = torch.cat([self.cls.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)  # (B, K+1, D)
        attn_mask = None
        if padding is not None and bool(padding.any()):
            keep = torch.cat([padding.new_zeros(B, 1), padding], dim=1).logical_not()  # (B, K+1)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, K+1) True = attend
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return self.norm(x)  # (B, K+1, D)
