"""Which genes each cell reveals to the encoder (TxFM §3 "Masking strategy", §5.2(d)).

TxFM samples, per cell, ``K`` of the genes its dataset measured ("observable") uniformly at
random without replacement and shows only those to the encoder. The frequency-weighted
variant samples with probability proportional to ``w_i ∝ m_i^τ`` (``m_i`` = number of training
cells in which gene ``i`` is nonzero); the encodings paper's "expressed-only" variant samples
among nonzero genes.

Weighted sampling without replacement uses the Gumbel-top-k trick: ``argtopk(log w_i + g_i)``
with i.i.d. standard Gumbel ``g_i`` is distributed exactly as successive sampling (draw one
gene with probability ``w_i / Σ w``, remove it, renormalise, repeat) — Vieira 2014; Kool et
al. 2019, "Stochastic Beams and Where to Find Them", ICML. Written in torch (rather than
``numpy.random.choice``) so a whole batch is sampled in one vectorised call, on any device.

:class:`RevealSpec` is the single description of *how* genes are revealed (``K``, ``τ``,
expressed-only); ``DEFAULT_N_REVEALED`` is the one default ``K`` of the package.
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

    def __post_init__(self) -> None:
        if isinstance(self.n_revealed, bool) or int(self.n_revealed) != self.n_revealed or self.n_revealed < 1:
            raise TfmkitError(f"n_revealed must be an integer >= 1, got {self.n_revealed!r}.")
        if not math.isfinite(float(self.tau)):
            raise TfmkitError(f"tau must be a finite number, got {self.tau!r}.")
        object.__setattr__(self, "n_revealed", int(self.n_revealed))
        object.__setattr__(self, "tau", float(self.tau))
        object.__setattr__(self, "expressed_only", bool(self.expressed_only))

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
    generator: torch.Generator | None,
    weights: torch.Tensor | None = None,
    expressed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample, per cell, up to ``n_revealed`` distinct candidate genes to reveal.

    Candidates of a cell are its observable genes (``observable``), restricted to its
    expressed genes when ``expressed`` is given. ``K = min(n_revealed, max #candidates)``
    slots are returned; a cell with fewer than ``K`` candidates reveals all of them and gets
    padded slots (``valid=False``, index 0).

    Parameters
    ----------
    observable
        ``(B, G)`` bool, genes measured by each cell's dataset.
    n_revealed
        Requested number of revealed genes ``K`` (TxFM paper: 2048; tfmkit default
        :data:`DEFAULT_N_REVEALED`).
    generator
        Torch generator (on the device of ``observable``) for reproducible draws.
    weights
        Optional ``(G,)`` non-negative sampling weights (uniform when ``None``); genes with
        weight 0 are never sampled.
    expressed
        Optional ``(B, G)`` bool, restrict candidates to these genes (expressed-only masking).

    Returns
    -------
    idx
        ``(B, K)`` int64 gene indices (0 where padded), in random order.
    valid
        ``(B, K)`` bool, ``False`` where the slot is padding.
    """
    if n_revealed < 1:
        raise TfmkitError(f"n_revealed must be >= 1, got {n_revealed}.")
    cand = observable.bool()  # (B, G)
    if expressed is not None:
        cand = cand & expressed.bool()  # (B, G)
    B, G = cand.shape
    u = torch.rand((B, G), generator=generator, device=cand.device)  # (B, G)
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
    scores = scores.masked_fill(~cand, float("-inf"))  # (B, G)
    n_cand = cand.sum(dim=1)  # (B,)
    k = int(min(n_revealed, int(n_cand.max()) if B else 0))
    if k == 0:
        empty = torch.zeros((B, 0), dtype=torch.long, device=cand.device)
        return empty, empty.bool()
    top, idx = torch.topk(scores, k, dim=1)  # (B, K)
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
