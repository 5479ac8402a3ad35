"""Gene and expression encodings (SPEC §3), each a registered ``nn.Module``.

A token for a revealed gene combines a *gene* encoding (which gene) with an *expression*
encoding (how much). TxFM uses ``concat``: ``token_i = [E_i ; x_i]`` with a ``d-1``-dim gene
embedding; every other expression encoder is summed with a ``d``-dim gene embedding.

Registries (constructor signatures):
- ``GENE_ENCODERS``: ``cls(n_tokens: int, dim: int, **kwargs)``; ``forward(gene_ids (B,K)) -> (B,K,dim)``.
- ``EXPRESSION_ENCODERS``: ``cls(dim: int, **kwargs)``; ``forward(values (B,K)) -> (B,K,dim)``.
  A class with ``concat = True`` returns ``(B, K, out_dim)`` features that are concatenated to a
  ``dim - out_dim`` gene embedding instead of summed.
"""

from __future__ import annotations

import torch
from torch import nn

from tfmkit.registry import Registry

GENE_ENCODERS: Registry = Registry("gene encoder")
EXPRESSION_ENCODERS: Registry = Registry("expression encoder")


@GENE_ENCODERS.register("learned")
class LearnedGeneEncoder(nn.Module):
    """A learnable embedding table ``E`` with one row per vocabulary token (TxFM ``E_i``)."""

    def __init__(self, n_tokens: int, dim: int, padding_idx: int | None = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, dim, padding_idx=padding_idx)
        nn.init.normal_(self.embedding.weight, std=0.02)
        if padding_idx is not None:
            with torch.no_grad():
                self.embedding.weight[padding_idx].zero_()

    def forward(self, gene_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(gene_ids)  # (B, K, dim)

    def gene_table(self) -> torch.Tensor:
        """The ``(n_tokens, dim)`` table of per-token gene vectors (for gene-embedding export)."""
        return self.embedding.weight


@EXPRESSION_ENCODERS.register("concat")
class ConcatExpression(nn.Module):
    """TxFM: the scalar log1p value itself becomes the last token coordinate, ``[E_i ; x_i]``."""

    concat = True
    out_dim = 1

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.unsqueeze(-1)  # (B, K, 1)


class TokenEmbedding(nn.Module):
    """Gene encoding (+ or ;) expression encoding -> ``(B, K, dim)`` tokens.

    Parameters
    ----------
    n_tokens
        Vocabulary size including special tokens (``GeneVocab.n_tokens``).
    dim
        Model width ``d``.
    gene_encoder, expression_encoder
        Registered names; extra constructor arguments go in ``gene_kwargs`` / ``expression_kwargs``.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        gene_encoder: str = "learned",
        expression_encoder: str = "concat",
        gene_kwargs: dict | None = None,
        expression_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        expr_cls = EXPRESSION_ENCODERS.get(expression_encoder)
        self.concat = bool(getattr(expr_cls, "concat", False))
        gene_dim = dim - expr_cls.out_dim if self.concat else dim
        self.gene = GENE_ENCODERS.get(gene_encoder)(n_tokens, gene_dim, **(gene_kwargs or {}))
        self.expression = expr_cls(dim, **(expression_kwargs or {}))

    def forward(self, gene_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        g = self.gene(gene_ids)  # (B, K, d or d-1)
        e = self.expression(values)  # (B, K, d or 1)
        return torch.cat([g, e.to(g.dtype)], dim=-1) if self.concat else g + e  # (B, K, d)
