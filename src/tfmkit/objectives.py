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
    return torch.where(mask, per_gene, torch.zeros((), dtype=per_gene.dtype)).sum(-1)


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
    per_gene = torch.where(p > 0, -p * log_q, torch.zeros((), dtype=p.dtype))  # (B, G)
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


def z_loss(logits: torch.Tensor, mask: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
    """z-loss (GPL §4.2.4, Chowdhery et al. 2022): ``alpha * (logsumexp_{g in M} phi_g)^2`` -> (B,).

    Keeps logits from drifting without bound; ``mask`` restricts the logsumexp to observable genes.
    """
    phi = _float(logits)
    if mask is not None:
        phi = phi.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(phi, dim=-1)  # (B,)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros((), dtype=lse.dtype))
    return alpha * lse.square()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """Stable ``log(1 - exp(x))`` for ``x <= 0`` (Mächler 2012): ``log(-expm1(x))`` if
    ``x > -ln 2`` else ``log1p(-exp(x))``. ``x`` is clamped below ``-tiny`` so the result (and its
    gradient) stays finite where ``exp(x)`` rounds to 1."""
    x = x.clamp_max(-torch.finfo(x.dtype).tiny)
    near = x > -math.log(2.0)
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, x, -1.0))),
        torch.log1p(-torch.exp(torch.where(near, -1.0, x))),
    )


@OBJECTIVES.register("gpl_nll")
def gpl_nll(
    logits: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact Geometric Plackett–Luce NLL of the observed ordered partition (SPEC §4) -> ``(B,)``.

    Each observable gene races a Geometric clock with stopping probability
    ``theta_g = sigmoid(-phi_g)`` (higher logit = more expressed = stops later). Observable genes
    grouped by count form ordered blocks ``B_1 (zeros) < B_2 < ... < B_m``; with
    ``R_j = B_j u ... u B_m``::

        log P = sum_j [ sum_{i in B_j} logsig(-phi_i) + sum_{l in R_j \\ B_j} logsig(phi_l)
                        - log(1 - exp(sum_{l in R_j} logsig(phi_l))) ]

    the probability that exactly ``B_1`` stops first, then exactly ``B_2``, ... (Henderson 2022;
    GPL paper §4.2, Suppl. A.2). It sums to 1 over ordered partitions and is invariant to order
    within a block. No ``log(n!)`` tie-entropy term is subtracted (it is not part of the
    partition probability).

    Computation, ``O(V + S log S)`` per cell (``S`` expressed genes): with ``b = logsig(phi)``
    and ``T_j = sum_{R_j} b`` (``T_{m+1} = 0``) the sum telescopes to
    ``log P = sum_M logsig(-phi) + sum_{j >= 2} T_j - sum_j log1mexp(T_j)``. One ``logsigmoid``
    pass over ``V`` gives ``T_1`` and the first sum; only the ``S`` nonzero counts are sorted
    (padded ``(B, S_max)``), block starts come from comparing neighbours of the sorted counts and
    ``T_j`` from a reversed cumulative sum. Never materialises ``V x S``.

    Parameters
    ----------
    logits
        ``(B, V)`` per-gene logits ``phi`` (any float dtype; computed in >= fp32).
    counts
        ``(B, V)`` non-negative counts (int or float); only their order matters.
    mask
        ``(B, V)`` bool, True for genes measured in the cell; others are left out of the ranking.
        ``None`` = all genes observable. A cell with no observable gene has loss 0.
    """
    phi = _float(logits)  # (B, V)
    n_cells = phi.shape[0]
    b = F.logsigmoid(phi)  # (B, V) log(1 - theta)
    expressed = counts > 0  # (B, V)
    if mask is not None:
        if mask.shape != phi.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != logits shape {tuple(phi.shape)}")
        zero = torch.zeros((), dtype=phi.dtype, device=phi.device)
        expressed = expressed & mask
        t_all = torch.where(mask, b, zero).sum(-1)  # (B,) T_1 = sum_M b
        sum_a = t_all - torch.where(mask, phi, zero).sum(-1)  # (B,) sum_M logsig(-phi) = b - phi
        n_obs = mask.sum(-1)  # (B,)
    else:
        t_all = b.sum(-1)  # (B,)
        sum_a = t_all - phi.sum(-1)  # (B,)
        n_obs = torch.full((n_cells,), phi.shape[1], device=phi.device)
    n_expr = expressed.sum(-1)  # (B,)
    has_zero = n_obs > n_expr  # (B,) zero block B_1 present

    # --- gather the S expressed genes of each cell into a padded (B, S_max) layout
    rows, cols = expressed.nonzero(as_tuple=True)  # (N,), (N,) row-major
    s_max = int(n_expr.max()) if n_cells else 0
    start = torch.cumsum(n_expr, 0) - n_expr  # (B,)
    pos = torch.arange(rows.numel(), device=phi.device) - start[rows]  # (N,) slot within row
    k_pad = torch.full((n_cells, s_max), float("inf"), dtype=phi.dtype, device=phi.device)
    k_pad[rows, pos] = counts[rows, cols].to(phi.dtype)  # (B, S)
    b_pad = torch.zeros((n_cells, s_max), dtype=phi.dtype, device=phi.device).index_put(
        (rows, pos), b[rows, cols]
    )  # (B, S) padding contributes 0 to every suffix sum
    k_sorted, order = torch.sort(k_pad, dim=1)  # (B, S) ascending, padding last
    b_sorted = b_pad.gather(1, order)  # (B, S)

    # --- suffix sums T at each position (highest counts first, for precision near 0)
    suffix = b_sorted.flip(1).cumsum(1).flip(1)  # (B, S)
    valid = torch.arange(s_max, device=phi.device) < n_expr.unsqueeze(1)  # (B, S)
    new_block = torch.ones_like(valid)
    new_block[:, 1:] = k_sorted[:, 1:] != k_sorted[:, :-1]
    is_start = valid & new_block  # (B, S) first position of each expressed block
    block_terms = torch.where(
        is_start, suffix - _log1mexp(torch.where(is_start, suffix, -1.0)), 0.0
    ).sum(-1)  # (B,)

    zero_term = torch.where(has_zero, -_log1mexp(torch.where(has_zero, t_all, -1.0)), -t_all)
    log_p = sum_a + block_terms + zero_term  # (B,)
    return -log_p
