"""Gradient-reversal layer (Ganin & Lempitsky 2015, "Unsupervised domain adaptation by
backpropagation", ICML; BMFM-RNA §2.2.5 "gradient reversal layer between the encoder and the
classifier to correct for batch effects").

Forward it is the identity; backward it multiplies the incoming gradient by ``-lambda``. Placed
between the cell embedding and an adversarial classifier (batch, donor), the classifier still
*minimises* its cross-entropy while the encoder receives ``-lambda dL_adv/de`` and so is pushed
towards embeddings from which the batch cannot be predicted. Gradients that reach the encoder
through any other head are untouched.
"""

from __future__ import annotations

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    """``y = x``; ``dL/dx = -lambda dL/dy``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``x`` unchanged in the forward pass; its gradient is multiplied by ``-lam`` backward."""
    return _ReverseGrad.apply(x, float(lam))


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient` with a fixed strength ``lam`` (``lambda >= 0``)."""

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        if not lam >= 0:
            from tfmkit.errors import TfmkitError

            raise TfmkitError(f"gradient-reversal lambda must be >= 0, got {lam}")
        self.lam = float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.lam)

    def extra_repr(self) -> str:
        return f"lambda={self.lam}"
