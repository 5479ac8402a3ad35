"""Which genes each cell reveals to the encoder (TxFM §3 "Masking strategy", §5.2(d)).

TxFM samples, per cell, ``K`` of the genes its dataset measured ("observable") uniformly at
random without replacement and shows only those to the encoder. The frequency-weighted
variant samples with probability proportional to ``w_i ∝ m_i^τ`` (``m_i`` = number of training
cells in which gene ``i`` is nonzero); the encodings paper's "expressed-only" variant samples
among nonzero genes; with a ``zero_fraction`` ``f > 0`` a fraction ``f`` of the revealed tokens
are observable *zero* genes, as BMFM (zeros appended after the nonzero genes, §3 "RDA only")
and GPL (~10% undetected genes appended, §4 "Input construction") do, so the model also learns
which measured genes are absent.

Weighted sampling without replacement uses the Gumbel-top-k trick: ``argtopk(log w_i + g_i)``
with i.i.d. standard Gumbel ``g_i`` is distributed exactly as successive sampling (draw one
gene with probability ``w_i / Σ w``, remove it, renormalise, repeat) — Vieira 2014; Kool et
al. 2019, "Stochastic Beams and Where to Find Them", ICML. Written in torch (rather than
``numpy.random.choice``) so a whole batch is sampled in one vectorised call, on any device.
``generator`` may also be one generator per cell: each row then depends only on its own
generator, which :func:`tfmkit.embed` seeds from the cell's counts so a cell's reveal does not
depend on its batch or position.

:class:`RevealSpec` is the single description of *how* genes are revealed (``K``, ``τ``,
expressed-only, zero fraction); ``DEFAULT_N_REVEALED`` is the one default ``K`` of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tfmkit.errors import TfmkitError

DEFAULT_N_REVEALED = 256
"""Default ``K`` (genes revealed per cell); the value of ``configs/txfm_tiny.yaml``."""


@dataclass(frozen=True)
class RevealSpec:
    """How each cell's revealed genes are sampled (TxFM §3 "Masking strategy", §5.2(d)).

    One object replaces the ``n_revealed`` / ``tau`` / ``expressed_only`` arguments that used to
    be repeated through the batch, loader and inference signatures.
    """

    n_revealed: int = DEFAULT_N_REVEALED
    """``K``: genes revealed to the encoder per cell, capped by the cell's candidate genes."""
    tau: float = 0.0
    """Frequency-weighting temperature: weights ``w_i ∝ m_i^τ`` (``m_i`` = training cells where
    gene ``i`` is nonzero); ``0`` = uniform (TxFM default). See :meth:`gene_weights`."""
    expressed_only: bool = False
    """Sample only among the cell's nonzero genes (encodings paper) instead of every observable
    gene."""
    zero_fraction: float = 0.0
    """With ``expressed_only``: fraction ``f`` of the revealed tokens given to observable genes
    the cell did *not* express (BMFM / GPL style; GPL uses ~0.1). The cell reveals
    ``n_e = min(#expressed, ceil((1 - f) K))`` expressed genes and
    ``n_z = min(#observable zeros, round(f n_e / (1 - f)))`` zeros, so zeros are a fraction
    ``f`` of its tokens whether it expressed 50 genes or 5,000, on a 765-gene panel or a
    20,000-gene one. ``0`` = expressed genes only (the encodings paper)."""

    def __post_init__(self) -> None:
        if isinstance(self.n_revealed, bool) or int(self.n_revealed) != self.n_revealed or self.n_revealed < 1:
            raise TfmkitError(f"n_revealed must be an integer >= 1, got {self.n_revealed!r}.")
        if not math.isfinite(float(self.tau)):
            raise TfmkitError(f"tau must be a finite number, got {self.tau!r}.")
        f = self.zero_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise TfmkitError(f"zero_fraction must be a number in [0, 1), got {f!r}.")
        if f > 0 and not self.expressed_only:
            raise TfmkitError(f"zero_fraction={f} applies to expressed-first reveal; set "
                              "expressed_only=true (data.expressed_only) or zero_fraction=0.")
        object.__setattr__(self, "n_revealed", int(self.n_revealed))
        object.__setattr__(self, "tau", float(self.tau))
        object.__setattr__(self, "expressed_only", bool(self.expressed_only))
        object.__setattr__(self, "zero_fraction", float(f))

    @property
    def weighted(self) -> bool:
        """Whether sampling is frequency-weighted (``tau != 0``) and so needs gene weights."""
        return self.tau != 0

    def gene_weights(self, store) -> torch.Tensor | None:
        """Sampling weights of this spec for a count store: ``None`` (uniform) when ``τ = 0``,
        else :func:`frequency_weights` of ``store.nonzero_cells()`` (``(G,)`` float32)."""
        if not self.weighted:
            return None
        return frequency_weights(store.nonzero_cells(), self.tau)


def sample_revealed(
    observable: torch.Tensor,
    n_revealed: int,
    *,
    generator,
    weights: torch.Tensor | None = None,
    expressed: torch.Tensor | None = None,
    zero_fraction: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample, per cell, up to ``n_revealed`` distinct candidate genes to reveal.

    Candidates of a cell are its observable genes (``observable``), restricted to its
    expressed genes when ``expressed`` is given. ``K = min(n_revealed, max #candidates)``
    slots are returned; a cell with fewer than ``K`` candidates reveals all of them and gets
    padded slots (``valid=False``, index 0). With ``expressed`` and ``zero_fraction = f > 0``
    the cell also reveals observable non-expressed genes, a fraction ``f`` of its tokens
    (:attr:`RevealSpec.zero_fraction`): expressed slots first, then zero slots.

    Parameters
    ----------
    observable
        ``(B, G)`` bool, genes measured by each cell's dataset.
    n_revealed
        Requested number of revealed genes ``K`` (TxFM paper: 2048; tfmkit default
        :data:`DEFAULT_N_REVEALED`).
    generator
        Torch generator (on the device of ``observable``) for reproducible draws, or a sequence
        of ``B`` generators, one per cell (row ``i`` then depends only on ``generator[i]``).
    weights
        Optional ``(G,)`` non-negative sampling weights (uniform when ``None``); genes with
        weight 0 are never sampled.
    expressed
        Optional ``(B, G)`` bool, restrict candidates to these genes (expressed-only masking).
    zero_fraction
        Fraction of revealed tokens given to observable non-expressed genes (needs ``expressed``).

    Returns
    -------
    idx
        ``(B, K)`` int64 gene indices (0 where padded), in random order.
    valid
        ``(B, K)`` bool, ``False`` where the slot is padding.
    """
    if n_revealed < 1:
        raise TfmkitError(f"n_revealed must be >= 1, got {n_revealed}.")
    if zero_fraction and expressed is None:
        raise TfmkitError("zero_fraction > 0 needs the expressed genes of each cell.")
    obs = observable.bool()  # (B, G)
    cand = obs & expressed.bool() if expressed is not None else obs  # (B, G)
    B, G = cand.shape
    u = _uniforms(B, G, generator, cand.device)  # (B, G)
    if weights is None:
        # Uniform sampling without replacement: top-k of i.i.d. uniforms is a uniform k-subset.
        scores = u
    else:
        w = torch.as_tensor(weights, dtype=torch.float64, device=cand.device)  # (G,)
        if w.shape != (G,):
            raise TfmkitError(f"gene weights have shape {tuple(w.shape)}, expected ({G},).")
        if (w < 0).any() or not torch.isfinite(w).all():
            raise TfmkitError("gene weights must be finite and non-negative.")
        gumbel = -torch.log(-torch.log(u.double().clamp(1e-300, 1.0 - 1e-16)))  # (B, G)
        scores = torch.log(w)[None, :] + gumbel  # (B, G); log 0 = -inf never sampled
        cand = cand & (w > 0)[None, :]
        obs = obs & (w > 0)[None, :]
    if not zero_fraction:
        return _top_candidates(scores, cand, n_revealed)
    f = float(zero_fraction)
    k_e = max(1, math.ceil((1.0 - f) * n_revealed))
    idx_e, valid_e = _top_candidates(scores, cand, k_e)  # (B, Ke)
    n_e = valid_e.sum(1)  # (B,)
    zeros = obs & ~cand  # (B, G) observable, not expressed
    want_z = torch.round(n_e.double() * f / (1.0 - f)).long()  # (B,)
    want_z = torch.minimum(want_z, zeros.sum(1))  # (B,)
    k_z = int(want_z.max()) if B else 0
    if k_z == 0:
        return idx_e, valid_e
    idx_z, _ = _top_candidates(scores, zeros, k_z)  # (B, Kz)
    valid_z = torch.arange(k_z, device=cand.device)[None, :] < want_z[:, None]  # (B, Kz)
    idx_z = idx_z.masked_fill(~valid_z, 0)  # (B, Kz)
    return torch.cat([idx_e, idx_z], 1), torch.cat([valid_e, valid_z], 1)  # (B, Ke+Kz) x2


def _uniforms(B: int, G: int, generator, device) -> torch.Tensor:
    """``(B, G)`` i.i.d. U(0, 1) from one generator, or row ``i`` from ``generator[i]``."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != B:
            raise TfmkitError(f"got {len(generator)} per-cell generators for {B} cells.")
        if B == 0:
            return torch.zeros((0, G), device=device)
        return torch.stack([torch.rand(G, generator=g, device=device) for g in generator])  # (B, G)
    return torch.rand((B, G), generator=generator, device=device)  # (B, G)


def _top_candidates(scores: torch.Tensor, cand: torch.Tensor,
                    n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (up to) ``n`` highest-``scores`` candidates of each row: ``(B, k)`` indices (0 where
    padded) and validity, ``k = min(n, max #candidates)``."""
    B = cand.shape[0]
    scores = scores.masked_fill(~cand, float("-inf"))  # (B, G)
    n_cand = cand.sum(dim=1)  # (B,)
    k = int(min(n, int(n_cand.max()) if B else 0))
    if k == 0:
        empty = torch.zeros((B, 0), dtype=torch.long, device=cand.device)
        return empty, empty.bool()
    _, idx = torch.topk(scores, k, dim=1)  # (B, K)
    valid = torch.arange(k, device=cand.device)[None, :] < n_cand[:, None]  # (B, K)
    idx = idx.masked_fill(~valid, 0)  # (B, K)
    return idx, valid


def frequency_weights(nonzero_cells: np.ndarray, tau: float) -> torch.Tensor:
    """Frequency-weighted masking weights ``w_i ∝ m_i^τ`` (TxFM §5.2(d)).

    ``m_i`` = number of training cells where gene ``i`` is nonzero. Positive ``τ`` favours
    frequently expressed genes, negative ``τ`` rare ones, ``τ = 0`` is uniform. Genes never
    expressed (``m_i = 0``) get the smallest weight of the genes with ``m_i >= 1`` (equal to
    treating them as ``m_i = 1`` when ``τ >= 0``), so they stay sampleable but never favoured.

    Returns a float32 ``(G,)`` tensor summing to 1.
    """
    m = np.asarray(nonzero_cells, dtype=np.float64)
    if m.ndim != 1 or (m < 0).any() or not np.isfinite(m).all():
        raise TfmkitError("nonzero_cells must be a 1-D array of non-negative counts.")
    if tau == 0 or m.size == 0:
        w = np.ones_like(m)
    else:
        pos = m >= 1
        logw = np.zeros_like(m)
        logw[pos] = tau * np.log(m[pos])
        if pos.any():
            logw[~pos] = logw[pos].min()
        w = np.exp(logw - logw.max())
    return torch.as_tensor(w / w.sum(), dtype=torch.float32)
