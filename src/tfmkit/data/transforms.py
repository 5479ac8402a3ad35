"""Small pure transforms on batch tensors (SPEC §2 "Transforms"; issue 8 item 5).

Each function takes and returns tensors of one batch (``B`` cells, ``G`` vocabulary genes or
``K`` tokens), has no state, and draws randomness only from the ``torch.Generator`` it is
given, so a collator composed of them is reproducible from its generator alone:

- :func:`log1p_normalize` — library-size normalisation + ``log1p`` (TxFM eqs. 3-4);
- :func:`reveal` / :func:`revealed_tokens` — which genes the encoder sees (uniform,
  τ-weighted or expressed-only, :mod:`tfmkit.data.masking`) and their tokens;
- :func:`sample_depths`, :func:`binomial_downsample`, :func:`rda_downsample` — read-depth-aware
  (RDA) downsampling of the input counts (BMFM §2.2.4, after scFoundation);
- :func:`gene_dropout` — random loss of observed counts (BMFM §2.2.4);
- :func:`hard_bins`, :func:`log2_bins` — discrete expression bins (encodings paper eqs. 14-17);
- :func:`expression_ranks` — descending expression rank per cell among observable genes.

The soft-binning weights of the ``soft_bin`` encoder are not here: they come from learned
layers, so they are part of the model, not of the data.
"""

from __future__ import annotations

import math

import torch

from tfmkit.data.masking import RevealSpec, sample_revealed
from tfmkit.data.normalize import DEFAULT_LIBRARY_SIZE
from tfmkit.data.vocab import GeneVocab
from tfmkit.errors import TfmkitError


# ---- normalisation -------------------------------------------------------------------------
def log1p_normalize(counts: torch.Tensor, library_sizes: torch.Tensor,
                    library_size: float = DEFAULT_LIBRARY_SIZE) -> torch.Tensor:
    """``log1p(L * counts / lib)`` per cell (TxFM eqs. 3-4), ``0`` for cells with ``lib = 0``.

    ``counts`` ``(B, G)`` float32 raw counts, ``library_sizes`` ``(B,)`` float32 totals of each
    cell over all its genes (not only the vocabulary's), ``library_size`` the target ``L``.
    Returns ``(B, G)`` float32.
    """
    lib = library_sizes
    scale = torch.where(lib > 0, library_size / lib.clamp_min(1e-12), torch.zeros_like(lib))  # (B,)
    return torch.log1p(counts * scale[:, None])  # (B, G)


# ---- reveal sampling -------------------------------------------------------------------------
def reveal(observable: torch.Tensor, spec: RevealSpec, *, generator,
           gene_weights: torch.Tensor | None = None,
           counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample each cell's revealed genes as ``spec`` says (:func:`~tfmkit.data.masking.sample_revealed`).

    ``observable`` ``(B, G)`` bool; ``gene_weights`` ``(G,)`` (uniform when ``None``; see
    :meth:`RevealSpec.gene_weights`); ``counts`` ``(B, G)`` is needed when
    ``spec.expressed_only`` (candidates = observable genes with ``counts > 0``; with
    ``spec.zero_fraction`` a fraction of the tokens are observable zeros). ``generator``: one
    torch generator, or one per cell (see :func:`~tfmkit.data.masking.sample_revealed`).
    Returns ``idx`` ``(B, K)`` int64 gene indices and ``valid`` ``(B, K)`` bool.
    """
    if spec.expressed_only and counts is None:
        raise TfmkitError("expressed-only reveal sampling needs the batch counts.")
    expressed = counts > 0 if spec.expressed_only else None  # (B, G)
    return sample_revealed(observable, spec.n_revealed, generator=generator, weights=gene_weights,
                           expressed=expressed, zero_fraction=spec.zero_fraction)


def revealed_tokens(target: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor):
    """Encoder inputs of the revealed genes.

    ``target`` ``(B, G)`` per-gene values, ``idx``/``valid`` ``(B, K)`` from :func:`reveal`.
    Returns ``(gene_ids, values, padding, revealed)``: ``(B, K)`` int64 token ids (PAD where
    padded), ``(B, K)`` values (0 where padded), ``(B, K)`` bool padding, and ``(B, G)`` bool
    mask of the genes shown to the encoder.
    """
    gene_ids = torch.where(valid, idx + GeneVocab.N_SPECIAL, torch.full_like(idx, GeneVocab.PAD))  # (B, K)
    values = target.gather(1, idx) * valid  # (B, K)
    revealed = torch.zeros(target.shape, dtype=torch.int32).scatter_add_(1, idx, valid.int()) > 0  # (B, G)
    return gene_ids, values, ~valid, revealed


# ---- read-depth-aware downsampling -----------------------------------------------------------
def sample_depths(library_sizes: torch.Tensor, *, generator: torch.Generator | None,
                  min_depth: float = 1000.0, keep_prob: float = 0.5) -> torch.Tensor:
    """Sampled read depth of each cell for RDA downsampling (BMFM §2.2.4; scFoundation).

    With probability ``keep_prob`` a cell keeps its depth ``S`` (its library size); otherwise
    its new depth is log-uniform on ``[min(min_depth, S), S]`` (depths span orders of magnitude).
    ``library_sizes`` ``(B,)``; returns ``(B,)`` float32 depths ``<= S``.
    """
    if min_depth <= 0 or not 0 <= keep_prob <= 1:
        raise TfmkitError(f"RDA needs min_depth > 0 and keep_prob in [0, 1], got {min_depth}, {keep_prob}.")
    S = library_sizes.double()  # (B,)
    u, keep = torch.rand((2, S.shape[0]), generator=generator, dtype=torch.float64)  # (B,), (B,)
    lo = torch.log(S.clamp(max=min_depth).clamp_min(1e-12))  # (B,)
    hi = torch.log(S.clamp_min(1e-12))  # (B,)
    depth = torch.exp(lo + u * (hi - lo)).clamp(max=S)  # (B,)
    depth = torch.where((keep < keep_prob) | (S <= 0), S, depth)  # (B,)
    return depth.float()


def binomial_downsample(counts: torch.Tensor, rate: torch.Tensor, *,
                        generator: torch.Generator | None) -> torch.Tensor:
    """Thin raw counts: each count ``c_ig`` becomes ``Binomial(c_ig, rate_i)`` (each read kept
    independently with probability ``rate_i``). ``counts`` ``(B, G)`` integer-valued,
    ``rate`` ``(B,)`` in ``[0, 1]``. Returns ``(B, G)`` float32; ``E = rate * counts``."""
    rate = torch.as_tensor(rate, dtype=torch.float32)
    if rate.shape != counts.shape[:1] or not bool(((rate >= 0) & (rate <= 1)).all()):
        raise TfmkitError(f"downsampling rates must be a ({counts.shape[0]},) tensor in [0, 1].")
    prob = rate[:, None].expand_as(counts).contiguous()  # (B, G)
    return torch.binomial(counts.float(), prob, generator=generator)  # (B, G)


def rda_downsample(counts: torch.Tensor, library_sizes: torch.Tensor, *,
                   generator: torch.Generator | None, min_depth: float = 1000.0,
                   keep_prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Read-depth-aware downsampling of the *input* (BMFM §2.2.4: the model sees the downsampled
    cell and is trained to reconstruct the original; keep the original ``counts`` as target).

    Depths from :func:`sample_depths`, counts thinned by :func:`binomial_downsample` with
    ``rate = depth / S``. Returns ``(counts_ds (B, G), library_ds (B,))``; ``library_ds`` is the
    downsampled vocabulary total plus ``rate`` times the counts outside the vocabulary (their
    expected downsampled total), so ``log1p_normalize(counts_ds, library_ds)`` is consistent.
    """
    lib = library_sizes.float()  # (B,)
    depth = sample_depths(lib, generator=generator, min_depth=min_depth, keep_prob=keep_prob)  # (B,)
    rate = torch.where(lib > 0, depth / lib.clamp_min(1e-12), torch.ones_like(lib)).clamp(0, 1)  # (B,)
    down = binomial_downsample(counts, rate, generator=generator)  # (B, G)
    outside = (lib - counts.sum(1)).clamp_min(0)  # (B,)
    return down, down.sum(1) + rate * outside


def gene_dropout(counts: torch.Tensor, p: float, *, generator: torch.Generator | None) -> torch.Tensor:
    """Random dropout: each gene of each cell is zeroed independently with probability ``p``
    (capture inefficiency, BMFM §2.2.4). ``counts`` ``(B, G)``; returns ``(B, G)``."""
    if not 0 <= p < 1:
        raise TfmkitError(f"gene dropout probability must be in [0, 1), got {p}.")
    keep = torch.rand(counts.shape, generator=generator) >= p  # (B, G)
    return counts * keep


# ---- binning ---------------------------------------------------------------------------------
def hard_bins(values: torch.Tensor, n_bins: int, edges: torch.Tensor | None = None) -> torch.Tensor:
    """Hard bin index (encodings paper eqs. 14-15; scGPT) ``(B, K)`` int64; zeros -> bin 0.

    With ``edges`` (increasing, ``n_bins - 2`` boundaries) a nonzero value gets
    ``b = 1 + #{edges <= x}``. Without, per-cell quantile bins of the nonzero values:
    ``b = 1 + floor((n_bins - 1) * r / n)``, ``r`` = number of nonzero values of the cell
    strictly below ``x``, ``n`` = number of nonzero values (ties share a bin).
    """
    nz = values > 0  # (B, K)
    if edges is not None:
        b = 1 + torch.bucketize(values, edges, right=True)  # (B, K)
    else:
        srt = torch.sort(values, dim=-1).values  # (B, K)
        below = torch.searchsorted(srt.contiguous(), values.contiguous(), right=False)  # (B, K) #values < x
        n_zero = (~nz).sum(-1, keepdim=True)  # (B, 1) zeros (and negatives) sort first
        rank = (below - n_zero).clamp_min(0)  # (B, K)
        n = nz.sum(-1, keepdim=True).clamp_min(1)  # (B, 1)
        b = 1 + torch.div(rank * (n_bins - 1), n, rounding_mode="floor")  # (B, K)
    return torch.where(nz, b.clamp_max(n_bins - 1), 0)  # (B, K)


def log2_bins(values: torch.Tensor, max_bin: int, input: str = "log1p") -> torch.Tensor:
    """Log2 bin ``min(floor(log2(c + 1)), B_max)`` (encodings paper eqs. 16-17), ``(B, K)`` int64.

    ``c`` is the normalised count: with ``input="log1p"`` values are ``log1p(c)`` and the bin is
    ``floor(x / ln 2)``; with ``input="counts"`` values are ``c`` itself.
    """
    if input not in ("log1p", "counts"):
        raise TfmkitError(f"log_bin input must be 'log1p' or 'counts', got {input!r}")
    x = values.clamp_min(0)  # (B, K)
    log2 = x / math.log(2.0) if input == "log1p" else torch.log2(x + 1.0)  # (B, K)
    return torch.floor(log2 + 1e-6).long().clamp(0, max_bin)  # (B, K); 1e-6: exact powers of 2


# ---- ranking ---------------------------------------------------------------------------------
def expression_ranks(values: torch.Tensor, observable: torch.Tensor | None = None, *,
                     ties: str = "average") -> torch.Tensor:
    """Descending expression rank of each gene within its cell (1 = most expressed).

    Only ``observable`` genes (``(B, G)`` bool; all when ``None``) are ranked; the others get
    rank 0. Tie rule: ``"average"`` gives tied genes their mid-rank (float32, equal to
    ``scipy.stats.rankdata(-x, "average")``); ``"ordinal"`` breaks ties by gene index, the
    lower index ranking first (int64, a stable order, ``rankdata(-x, "ordinal")``).
    ``values`` ``(B, G)`` finite; returns ``(B, G)``.
    """
    if ties not in ("average", "ordinal"):
        raise TfmkitError(f"rank ties must be 'average' or 'ordinal', got {ties!r}.")
    if not bool(torch.isfinite(values).all()):
        raise TfmkitError("cannot rank non-finite expression values.")
    obs = torch.ones_like(values, dtype=torch.bool) if observable is None else observable.bool()  # (B, G)
    key = torch.where(obs, -values.double(), torch.full_like(values, math.inf, dtype=torch.float64))  # (B, G)
    if ties == "ordinal":
        order = torch.sort(key, dim=1, stable=True).indices  # (B, G)
        pos = torch.arange(1, key.shape[1] + 1).expand_as(order)  # (B, G)
        ranks = torch.empty_like(order).scatter_(1, order, pos)  # (B, G)
        return torch.where(obs, ranks, 0)
    srt = torch.sort(key, dim=1).values.contiguous()  # (B, G)
    n_above = torch.searchsorted(srt, key.contiguous(), right=False)  # (B, G) genes strictly higher
    n_at_or_above = torch.searchsorted(srt, key.contiguous(), right=True)  # (B, G)
    ranks = (n_above + n_at_or_above + 1).double() / 2  # (B, G) mid-rank
    return torch.where(obs, ranks, 0.0).float()
