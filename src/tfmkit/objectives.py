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
    zero = torch.zeros((), dtype=per_gene.dtype, device=per_gene.device)
    total = torch.where(mask, per_gene, zero).sum(-1)  # (B,) masked entries never leak (nan/inf)
    return total / mask.sum(-1).clamp_min(1).to(per_gene.dtype)


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


@OBJECTIVES.register("mse")
def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error on log1p values: ``(1/|M|) sum_{i in M} (x_hat_i - x_i)^2`` -> ``(B,)``.

    TxFM Table 5a "MSE"; GPL §4.4 objective 4 (MSE on log-normalised counts).
    """
    return _masked_mean((pred - target).square(), mask)  # (B,)


@OBJECTIVES.register("smooth_l1")
def smooth_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, beta: float = 1.0
) -> torch.Tensor:
    """Smooth-L1 (Huber / beta) on log1p values, mean over observable genes -> ``(B,)``.

    Per gene, with ``d = |x_hat - x|``: ``0.5 d^2 / beta`` if ``d < beta`` else ``d - 0.5 beta``
    (``torch.nn.functional.smooth_l1_loss``). TxFM Table 5a "SmoothL1".
    """
    per_gene = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)  # (B, G)
    return _masked_mean(per_gene, mask)


def _masked_sum(per_gene: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Sum over genes of ``per_gene`` (B, G), restricted to ``mask`` (B, G) when given -> (B,)."""
    if mask is None:
        return per_gene.sum(dim=-1)
    zero = torch.zeros((), dtype=per_gene.dtype, device=per_gene.device)
    return torch.where(mask, per_gene, zero).sum(-1)


def _float(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 to float32 (losses are always computed in >= fp32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@OBJECTIVES.register("geometric_count_nll")
def geometric_count_nll(
    logits: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Geometric count NLL (GPL paper §4.4 / Suppl. A.1), summed over observable genes -> ``(B,)``.

    ``-sum_g [logsigmoid(-phi_g) + k_g logsigmoid(phi_g)]``: ``k_g ~ Geometric(theta_g)`` counting
    failures before the first success, with stopping probability ``theta_g = sigmoid(-phi_g)`` and
    mean ``exp(phi_g)``. Equals ``-torch.distributions.Geometric(logits=-phi).log_prob(k)``.
    """
    phi, k = _float(logits), _float(counts)
    per_gene = -(F.logsigmoid(-phi) + k * F.logsigmoid(phi))  # (B, G)
    return _masked_sum(per_gene, mask)


@OBJECTIVES.register("nb_nll")
def nb_nll(
    logits: torch.Tensor,
    counts: torch.Tensor,
    dispersion: torch.Tensor | float = 1.0,
    mask: torch.Tensor | None = None,
    dispersion_l2: float = 0.0,
) -> torch.Tensor:
    """Negative-binomial NLL in logit space (GPL Suppl. A.1), summed over genes -> ``(B,)``.

    ``-sum_g [r_g logsigmoid(-phi_g) + k_g logsigmoid(phi_g) + lgamma(k_g + r_g) - lgamma(r_g)
    - lgamma(k_g + 1)]`` with per-gene dispersion ``r_g > 0`` (``dispersion``: scalar, ``(G,)`` or
    ``(B, G)``); ``r = 1`` recovers :func:`geometric_count_nll`. Equals
    ``-torch.distributions.NegativeBinomial(total_count=r, logits=phi).log_prob(k)``.

    ``dispersion_l2 = alpha_r`` adds ``alpha_r * mean_g (r_g - 1)^2`` to every cell's loss (so
    the batch mean carries the penalty once; the paper uses ``alpha_r = 0.01``).
    """
    phi, k = _float(logits), _float(counts)
    r = torch.as_tensor(dispersion, dtype=phi.dtype, device=phi.device)
    log_p = (
        r * F.logsigmoid(-phi)
        + k * F.logsigmoid(phi)
        + torch.lgamma(k + r)
        - torch.lgamma(r)
        - torch.lgamma(k + 1.0)
    )  # (B, G)
    loss = _masked_sum(-log_p, mask)  # (B,)
    if dispersion_l2:
        loss = loss + dispersion_l2 * (r - 1.0).square().mean()
    return loss


@OBJECTIVES.register("proportional_ce")
def proportional_ce(
    logits: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Proportional cross-entropy (GPL §4.4 objective 3, "PROP") -> ``(B,)``.

    ``-sum_g p_g log softmax(phi)_g`` with ``p_g = k_g / sum_j k_j``; softmax and proportions run
    over the observable genes only. A cell with no counts contributes 0.
    """
    phi, k = _float(logits), _float(counts)
    if mask is not None:
        phi = phi.masked_fill(~mask, float("-inf"))  # excluded from the normaliser
        k = k.masked_fill(~mask, 0.0)
    log_q = torch.log_softmax(phi, dim=-1)  # (B, G)
    total = k.sum(-1, keepdim=True)  # (B, 1)
    p = k / total.clamp_min(torch.finfo(k.dtype).tiny)  # (B, G)
    per_gene = torch.where(p > 0, -p * log_q, torch.zeros((), dtype=p.dtype, device=p.device))
    return per_gene.sum(-1)


def depth_shift(
    logits: torch.Tensor,
    library_size: torch.Tensor,
    n_observable: torch.Tensor | float,
    s0: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """UMI depth shift (GPL §4.2.3, Suppl. A.3; sign as SPEC §4): ``phi' = phi + s0 log(U / V)``.

    ``library_size`` ``U`` (B,) total UMI, ``n_observable`` ``V`` (B,) or scalar number of
    observable genes, ``s0`` the (learned) scale, init 1. ``exp(phi')`` = ``exp(phi) * U / V``:
    logits become residuals against a uniformly expressed cell of the same depth. Returns (B, G).
    """
    u = _float(torch.as_tensor(library_size, device=logits.device)).clamp_min(1.0)
    v = _float(torch.as_tensor(n_observable, device=logits.device)).clamp_min(1.0)
    shift = torch.log(u / v)  # (B,) or ()
    if shift.ndim:
        shift = shift.unsqueeze(-1)  # (B, 1)
    return _float(logits) + s0 * shift  # (B, G)


def z_loss(
    logits: torch.Tensor, mask: torch.Tensor | None = None, alpha: float = 1.0
) -> torch.Tensor:
    """z-loss (GPL §4.2.4, Chowdhery et al. 2022): ``alpha * (logsumexp_{g in M} phi_g)^2`` -> (B,).

    Keeps logits from drifting without bound; ``mask`` restricts the logsumexp to observable genes.
    """
    phi = _float(logits)
    if mask is not None:
        phi = phi.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(phi, dim=-1)  # (B,)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros((), dtype=lse.dtype, device=lse.device))
    return alpha * lse.square()


def _wced_part(
    expressed_logits: torch.Tensor,
    value_pred: torch.Tensor,
    target: torch.Tensor,
    sel: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE over ``sel`` plus MSE over ``sel`` & nonzero target -> ((B,), nonempty (B,))."""
    is_expr = target > 0  # (B, G)
    bce = F.binary_cross_entropy_with_logits(
        expressed_logits, is_expr.to(expressed_logits.dtype), reduction="none"
    )  # (B, G)
    sq = (value_pred - target).square()  # (B, G)
    return _masked_mean(bce, sel) + _masked_mean(sq, sel & is_expr), sel.any(-1)


@OBJECTIVES.register("wced_loss")
def wced_loss(
    expressed_logits: torch.Tensor,
    value_pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whole-cell expression decoder loss (BMFM-RNA §2.2, Fig. 2; SPEC §4) -> ``(B,)``.

    From the CLS embedding a model predicts, for every observable gene, an expressed/not logit
    (``expressed_logits`` (B, G)) and a value (``value_pred`` (B, G), log1p space). For a gene set
    ``S``: ``L_S = mean_{g in S} BCE(l_g, [x_g > 0]) + mean_{g in S, x_g > 0} (v_g - x_g)^2``.
    With ``input_mask`` (genes given to the encoder) the input-gene (autoencoder) and
    non-input-gene (masking) terms get equal weight: ``(L_in + L_out) / 2`` (a group empty in a
    cell is left out of the average); without it, ``L_M`` over all observable genes ``M``.
    """
    e, v, x = _float(expressed_logits), _float(value_pred), _float(target)
    observable = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    if input_mask is None:
        return _wced_part(e, v, x, observable)[0]
    l_in, has_in = _wced_part(e, v, x, observable & input_mask)
    l_out, has_out = _wced_part(e, v, x, observable & ~input_mask)
    n = (has_in.to(x.dtype) + has_out.to(x.dtype)).clamp_min(1.0)  # (B,)
    return (l_in + l_out) / n


# the GPL likelihood lives in its own module; importing it registers "gpl_nll"
from tfmkit.gpl import _log1mexp, gpl_nll  # noqa: E402,F401
