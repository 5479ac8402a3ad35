"""Gene and expression encodings (SPEC §3), each a registered ``nn.Module``.

A token for a revealed gene combines a *gene* encoding (which gene) with an *expression*
encoding (how much). TxFM uses ``concat``: ``token_i = [E_i ; x_i]`` with a ``d-1``-dim gene
embedding; every other expression encoder is summed with a ``d``-dim gene embedding.

Registries (constructor signatures):
- ``GENE_ENCODERS``: ``cls(n_tokens: int, dim: int, **kwargs)``;
  ``forward(gene_ids (B,K)) -> (B,K,dim)``.
- ``EXPRESSION_ENCODERS``: ``cls(dim: int, **kwargs)``; ``forward(values (B,K)) -> (B,K,dim)``.
  A class with ``concat = True`` returns ``(B, K, out_dim)`` features that are concatenated to a
  ``dim - out_dim`` gene embedding instead of summed.

Gene encoders: ``learned`` (embedding table), ``pretrained`` (user table gene -> vector through
an MLP, learned rows for genes the table lacks). Expression encoders (values are log1p-normalised):
``concat`` (TxFM), ``mlp``, ``hard_bin``, ``log_bin``, ``soft_bin``, ``periodic``; every summed
encoder takes ``zero_token=True`` to give exact zeros their own learned vector (BMFM §2.2.6).
The bin computations of ``hard_bin`` / ``log_bin`` are the pure functions of
:mod:`tfmkit.data.transforms`; the encoders only own the learned bin tables.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfmkit.data.transforms import hard_bins, log2_bins
from tfmkit.errors import TfmkitError
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


class _SummedExpression(nn.Module):
    """Base of summed expression encoders: ``(B, K) -> (B, K, dim)``, optional zero token.

    With ``zero_token=True`` a value exactly 0 is mapped to a learned vector ``E_special``
    instead of the encoder output (BMFM §2.2.6 zero-special token).
    """

    concat = False

    def __init__(self, dim: int, zero_token: bool = False) -> None:
        super().__init__()
        self.zero = nn.Parameter(torch.randn(dim) * 0.02) if zero_token else None

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        out = self.encode(values.float())  # (B, K, dim)
        if self.zero is not None:
            out = torch.where((values == 0).unsqueeze(-1), self.zero.to(out.dtype), out)
        return out


@EXPRESSION_ENCODERS.register("mlp")
class MLPExpression(_SummedExpression):
    """Raw value MLP (encodings paper eq. 13; BMFM continuous MLP): ``W_n phi(... phi(W_1 x))``."""

    def __init__(
        self, dim: int, hidden_dim: int | None = None, n_layers: int = 2, zero_token: bool = False
    ) -> None:
        super().__init__(dim, zero_token)
        if n_layers < 1:
            raise TfmkitError(f"mlp expression encoder needs n_layers >= 1, got {n_layers}")
        hidden = hidden_dim or dim
        widths = [1] + [hidden] * (n_layers - 1) + [dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.net(values.unsqueeze(-1))  # (B, K, dim)


@EXPRESSION_ENCODERS.register("hard_bin")
class HardBinExpression(_SummedExpression):
    """Hard binning (encodings paper eq. 14-15; scGPT): ``Embedding(b)``, zeros -> bin 0.

    With ``edges`` (increasing, ``n_bins - 2`` boundaries) a nonzero value gets
    ``b = 1 + #{edges <= x}``. Without, per-cell quantile bins of the nonzero values:
    ``b = 1 + floor((n_bins - 1) * r / n)``, ``r`` = number of nonzero values of the cell
    strictly below ``x``, ``n`` = number of nonzero values (ties share a bin).
    """

    def __init__(
        self, dim: int, n_bins: int = 51, edges: list[float] | None = None, zero_token: bool = False
    ) -> None:
        super().__init__(dim, zero_token)
        if n_bins < 2:
            raise TfmkitError(f"hard_bin needs n_bins >= 2 (bin 0 is for zeros), got {n_bins}")
        if edges is not None:
            edges_t = torch.as_tensor(edges, dtype=torch.float32)
            if edges_t.numel() != n_bins - 2 or (
                edges_t.numel() > 1 and not bool((edges_t[1:] > edges_t[:-1]).all())
            ):
                raise TfmkitError(
                    f"hard_bin edges must be {n_bins - 2} increasing values for n_bins={n_bins}"
                )
            self.register_buffer("edges", edges_t)
        else:
            self.edges = None
        self.n_bins = n_bins
        self.embedding = nn.Embedding(n_bins, dim)

    def bins(self, values: torch.Tensor) -> torch.Tensor:
        """Bin index ``(B, K)`` int64 of every value (:func:`tfmkit.data.transforms.hard_bins`)."""
        return hard_bins(values, self.n_bins, self.edges)  # (B, K)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.bins(values))  # (B, K, dim)


@EXPRESSION_ENCODERS.register("log_bin")
class LogBinExpression(_SummedExpression):
    """Log2 binning (encodings paper eq. 16-17): ``b = min(floor(log2(c + 1)), B_max)``.

    ``c`` is the normalised count: with ``input="log1p"`` (default; values are ``log1p(c)``)
    this is ``floor(x / ln 2)``; with ``input="counts"`` values are used as ``c`` directly.
    """

    def __init__(
        self, dim: int, max_bin: int = 16, input: str = "log1p", zero_token: bool = False
    ) -> None:
        super().__init__(dim, zero_token)
        if input not in ("log1p", "counts"):
            raise TfmkitError(f"log_bin input must be 'log1p' or 'counts', got {input!r}")
        self.max_bin, self.input = int(max_bin), input
        self.embedding = nn.Embedding(self.max_bin + 1, dim)

    def bins(self, values: torch.Tensor) -> torch.Tensor:
        """Bin index ``(B, K)`` int64 (:func:`tfmkit.data.transforms.log2_bins`)."""
        return log2_bins(values, self.max_bin, self.input)  # (B, K)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.bins(values))  # (B, K, dim)


@EXPRESSION_ENCODERS.register("soft_bin")
class SoftBinExpression(_SummedExpression):
    """Soft binning (encodings paper eq. 18): ``alpha = softmax(W2 LeakyReLU(W1 x))`` over
    ``n_bins`` bins, then a soft lookup ``alpha @ T`` in a learned ``(n_bins, dim)`` table."""

    def __init__(
        self, dim: int, n_bins: int = 10, hidden_dim: int | None = None, zero_token: bool = False
    ) -> None:
        super().__init__(dim, zero_token)
        hidden = hidden_dim or n_bins
        self.w1 = nn.Linear(1, hidden)
        self.w2 = nn.Linear(hidden, n_bins)
        self.act = nn.LeakyReLU(0.1)
        self.table = nn.Parameter(torch.randn(n_bins, dim) * 0.02)

    def weights(self, values: torch.Tensor) -> torch.Tensor:
        """Bin weights ``alpha`` (B, K, n_bins), rows summing to 1."""
        return torch.softmax(self.w2(self.act(self.w1(values.unsqueeze(-1)))), dim=-1)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.weights(values) @ self.table  # (B, K, dim)


@EXPRESSION_ENCODERS.register("periodic")
class PeriodicExpression(_SummedExpression):
    """Periodic encoding (BMFM §2.2.6): ``v = 2 pi c x``, ``f = [sin v ; cos v]`` with trainable
    frequencies ``c`` (``n_freq``, init ``N(0, sigma^2)``), then ``W2 ReLU(W1 f + b1) + b2``."""

    def __init__(
        self,
        dim: int,
        n_freq: int = 16,
        sigma: float = 1.0,
        hidden_dim: int | None = None,
        zero_token: bool = False,
    ) -> None:
        super().__init__(dim, zero_token)
        self.freq = nn.Parameter(torch.randn(n_freq) * sigma)
        hidden = hidden_dim or dim
        self.proj = nn.Sequential(nn.Linear(2 * n_freq, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def features(self, values: torch.Tensor) -> torch.Tensor:
        """``[sin(2 pi c x) ; cos(2 pi c x)]`` (B, K, 2 n_freq)."""
        v = 2 * math.pi * self.freq * values.unsqueeze(-1)  # (B, K, n_freq)
        return torch.cat([torch.sin(v), torch.cos(v)], dim=-1)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(values))  # (B, K, dim)


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
    gene_norm
        Rescale each gene vector to unit RMS, ``sqrt(d_g) E_i / ||E_i||``, before it is combined
        with the expression encoding. With TxFM's ``[E_i ; x_i]`` and ``E`` initialised at std
        0.02, the value coordinate otherwise carries ~99% of a token's energy after LayerNorm
        (issue 12: expressed genes' tokens had cosine 0.999); normalised, the gene part has
        energy ``d_g`` (127 at ``d = 128``), comparable to ``x_i^2 <= log(L + 1)^2`` (133 at
        ``L = 1e5``), and weight decay cannot shrink it.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        gene_encoder: str = "learned",
        expression_encoder: str = "concat",
        gene_kwargs: dict | None = None,
        expression_kwargs: dict | None = None,
        gene_norm: bool = False,
    ) -> None:
        super().__init__()
        self.gene_norm = bool(gene_norm)
        for reg, name in ((GENE_ENCODERS, gene_encoder), (EXPRESSION_ENCODERS, expression_encoder)):
            if name not in reg:
                raise TfmkitError(
                    f"unknown {reg.kind} {name!r}; choose one of: {', '.join(reg.names())}"
                )
        expr_cls = EXPRESSION_ENCODERS.get(expression_encoder)
        self.concat = bool(getattr(expr_cls, "concat", False))
        gene_dim = dim - expr_cls.out_dim if self.concat else dim
        self.gene = _build(
            GENE_ENCODERS.get(gene_encoder), gene_encoder, n_tokens, gene_dim, **(gene_kwargs or {})
        )
        self.expression = _build(expr_cls, expression_encoder, dim, **(expression_kwargs or {}))

    def forward(self, gene_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        g = self.gene(gene_ids)  # (B, K, d or d-1)
        if self.gene_norm:
            rms = g.float().pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()  # (B, K, 1)
            g = (g / rms.to(g.dtype)) * (gene_ids != 0).unsqueeze(-1).to(g.dtype)  # (B, K, d_g); PAD -> 0
        e = self.expression(values)  # (B, K, d or 1)
        return torch.cat([g, e.to(g.dtype)], dim=-1) if self.concat else g + e  # (B, K, d)


def _build(cls, name: str, *args, **kwargs) -> nn.Module:
    """Instantiate a registered encoder; a bad keyword becomes a one-line :class:`TfmkitError`."""
    try:
        return cls(*args, **kwargs)
    except TypeError as err:
        raise TfmkitError(f"bad options for encoder {name!r}: {err}") from None


# the table-based gene encoder lives in its own module; importing it registers "pretrained"
from tfmkit.gene_table_encoder import PretrainedGeneEncoder, load_gene_table  # noqa: E402,F401
