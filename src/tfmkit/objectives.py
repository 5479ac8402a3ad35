"""Pure objective functions and decoder output activations (registries).

Every objective takes tensors and returns a per-cell loss ``Tensor[B]`` (reduce with ``.mean()``);
modules never compute losses. Shapes: ``B`` cells, ``G`` genes. ``mask`` (bool ``[B, G]``) marks
the genes a cell's dataset measured (its *observable* genes, SPEC §2); unobserved genes never
enter a loss.

Registries:
- ``OBJECTIVES``: name -> loss function (SPEC §1 contract names).
- ``ACTIVATIONS``: name -> decoder output activation ``phi(z, library_size)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tfmkit.registry import Registry

OBJECTIVES: Registry = Registry("objective")
ACTIVATIONS: Registry = Registry("output activation")


def _masked_mean(per_gene: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over genes of ``per_gene`` (B, G), restricted to ``mask`` (B, G) when given -> (B,)."""
    if mask is None:
        return per_gene.mean(dim=-1)
    m = mask.to(per_gene.dtype)  # (B, G)
    return (per_gene * m).sum(-1) / m.sum(-1).clamp_min(1.0)


# --------------------------------------------------------------------------- activations
@ACTIVATIONS.register("rectified_tanh")
def rectified_tanh(z: torch.Tensor, library_size: float = 1e5) -> torch.Tensor:
    """TxFM eq. (1): ``phi(z) = log(L + 1) * ReLU(tanh(z / (4e)))``.

    Bounded in ``[0, log(L+1))``, the support of library-normalised log1p targets.
    """
    return math.log(library_size + 1.0) * torch.relu(torch.tanh(z / (4.0 * math.e)))


@ACTIVATIONS.register("relu")
def relu(z: torch.Tensor, library_size: float = 1e5) -> torch.Tensor:
    """Plain ``ReLU(z)`` (diverges in TxFM Table 5f; kept for ablations)."""
    return torch.relu(z)


@ACTIVATIONS.register("clamped_relu")
def clamped_relu(z: torch.Tensor, library_size: float = 1e5) -> torch.Tensor:
    """TxFM §C.1: ``min(ReLU(z), log(L + 1))``."""
    return torch.clamp(z, min=0.0, max=math.log(library_size + 1.0))


@ACTIVATIONS.register("identity")
def identity(z: torch.Tensor, library_size: float = 1e5) -> torch.Tensor:
    """No activation (logits are used as they are, e.g. for GPL or NB logits)."""
    return z


@ACTIVATIONS.register("softmax")
def softmax(z: torch.Tensor, library_size: float = 1e5) -> torch.Tensor:
    """Softmax over genes scaled to the library size, in log1p space: ``log1p(L * softmax(z))``.

    TxFM Table 5f "softmax": predicted proportions times ``L`` give normalised counts, which are
    mapped to the same log1p space as the targets.
    """
    return torch.log1p(library_size * torch.softmax(z, dim=-1))


# --------------------------------------------------------------------------- losses
@OBJECTIVES.register("poisson_nll")
def poisson_nll(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """TxFM eq. (2)/(6): ``(1/|M|) sum_{i in M} exp(x_hat_i) - x_hat_i * exp(x_i)``.

    ``pred`` = x_hat (log rate, i.e. log1p space) and ``target`` = x (log1p-normalised), both
    ``(B, G)``; the mean runs over the observable genes ``M`` (``mask``), masked and unmasked
    alike. The constant ``log(k!)`` is dropped, as in the paper. Returns ``(B,)``.
    """
    per_gene = torch.exp(pred) - pred * torch.exp(target)  # (B, G)
    return _masked_mean(per_gene, mask)
