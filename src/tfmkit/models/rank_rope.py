"""Rank-driven rotary attention and AdaLN: the causal block of the ``gpl_ar`` family (GPL §4.1).

**Rank RoPE.** Rotary position embeddings (Su et al. 2021) rotate each query/key pair of
channels ``(x_i, x_{i + Dh/2})`` by the angle ``r * w_i`` with ``w_i = base^(-2i/Dh)``. Here ``r``
is the token's *expression rank in its cell* (:func:`tfmkit.data.collate_ar.dense_ranks`), not its
sequence position, so ``<R(r_q) q, R(r_k) k> = <q, R(r_k - r_q) k>``: the attention logit of a
pair depends on the two genes and the *difference of their ranks* only. Because the sequence is
randomly permuted, the same gene pair gets the same logit wherever the two genes sit; the
sequence order only decides which keys a query may see (the causal mask).

**AdaLN.** Pre-LN blocks whose LayerNorms are modulated by a cell-level condition vector ``c``
(the sum of learned categorical embeddings of ``obs`` columns)::

    AdaLN(x, c) = LN(x) * (1 + scale(c)) + shift(c),   (shift, scale) = W SiLU(c) + b

with one ``W, b`` per LayerNorm of every block, **zero-initialised**, so an untrained
conditioner leaves the network exactly as without conditioning (adaLN-Zero, Peebles & Xie 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfmkit.models.blocks import Mlp


def rope_tables(ranks: torch.Tensor, head_dim: int, base: float = 10000.0):
    """``(cos, sin)`` of the rotation angles ``rank * base^(-2i/Dh)``, each ``(B, 1, T, Dh/2)``.

    ``ranks`` ``(B, T)`` (float: any real rank works, e.g. mid-ranks).
    """
    if head_dim % 2:
        raise ValueError(f"rank RoPE needs an even head width, got {head_dim}")
    inv = base ** (-torch.arange(0, head_dim, 2, device=ranks.device, dtype=torch.float32) / head_dim)  # (Dh/2,)
    ang = ranks.float()[:, None, :, None] * inv  # (B, 1, T, Dh/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x_i, x_{i+Dh/2})`` of ``x`` ``(B, H, T, Dh)`` by the tabled angles."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, T, Dh/2) each
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, Dh)
    return out.to(x.dtype)


def causal_mask(padding: torch.Tensor | None, t: int, device) -> torch.Tensor:
    """``(B or 1, 1, T, T)`` bool, True = may attend: key ``s <= t`` and not padded.

    A padded query always sees itself, so no row is empty (no NaN from an all-masked softmax).
    """
    tri = torch.ones(t, t, dtype=torch.bool, device=device).tril()  # (T, T)
    if padding is None:
        return tri[None, None]  # (1, 1, T, T)
    keys = ~padding.bool()  # (B, T)
    eye = torch.eye(t, dtype=torch.bool, device=device)  # (T, T)
    return (tri[None] & (keys[:, None, :] | eye[None]))[:, None]  # (B, 1, T, T)


class RankRopeAttention(nn.Module):
    """Multi-head causal self-attention with QK-norm (optional) and rank RoPE on queries/keys."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()

    def _qkv(self, x: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, *rope), apply_rope(k, *rope), v

    def scores(self, x: torch.Tensor, rope) -> torch.Tensor:
        """Attention logits ``q_t . k_s / sqrt(Dh)`` before the causal mask, ``(B, H, T, T)``."""
        q, k, _ = self._qkv(x, rope)
        return q @ k.transpose(-1, -2) / self.head_dim ** 0.5  # (B, H, T, T)

    def forward(self, x: torch.Tensor, rope, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self._qkv(x, rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class AdaLN(nn.Module):
    """``LN(x) * (1 + scale(c)) + shift(c)``; plain LayerNorm when ``c`` is ``None`` or
    ``cond_dim == 0``. The modulation layer starts at zero (see the module docstring)."""

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mod = None
        if cond_dim:
            self.mod = nn.Linear(cond_dim, 2 * dim)
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)  # (B, T, D)
        if self.mod is None or cond is None:
            return h
        shift, scale = self.mod(F.silu(cond)).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        return h * (1 + scale) + shift  # (B, T, D)


class CausalRankBlock(nn.Module):
    """Pre-LN causal transformer block: ``x + Attn(AdaLN(x)) ; x + MLP(AdaLN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 cond_dim: int = 0) -> None:
        super().__init__()
        self.norm1 = AdaLN(dim, cond_dim)
        self.attn = RankRopeAttention(dim, heads, qk_norm)
        self.norm2 = AdaLN(dim, cond_dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, rope, mask: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x, cond), rope, mask)  # (B, T, D)
        return x + self.mlp(self.norm2(x, cond))  # (B, T, D)
