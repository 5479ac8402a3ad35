"""Criteria: the adapter between model outputs, batches and the pure objectives.

The objectives in :mod:`tfmkit.objectives` are pure functions; a :class:`Criterion` picks the
right model output and batch fields for one of them, builds the gene mask, and owns the few
*learned* loss parameters (NB per-gene dispersion ``r_g``, depth-shift scale ``s0``). It is an
``nn.Module`` so those parameters are trained and checkpointed with the model: **add
``criterion.parameters()`` to the optimiser** (empty for most objectives).

Model outputs ``out``: a :class:`~tfmkit.models.protocol.ModelOutput` (or a mapping with the
same names): ``gene_logits`` (B, G) decoder pre-activation, ``gene_pred`` (B, G) after the output
activation, head outputs by name (``wced_expressed``, ``wced_value``). Batch keys
(:mod:`tfmkit.data.keys`): ``TARGET`` (B, G) log1p-normalised, ``OBSERVABLE`` (B, G) bool,
``COUNTS`` (B, G) raw counts, ``REVEALED`` (B, G) bool, ``LIBRARY_SIZE`` (B,).

Which genes enter the loss (``loss_on``): ``"all"`` = every observable gene (TxFM: masked and
unmasked alike); ``"masked"`` = observable genes *not* shown to the encoder.

Families (registered in ``CRITERIA`` under the objective names, usable as YAML
``train.objective``):

- log1p space (``poisson_nll``, ``mse``, ``smooth_l1``): ``gene_pred`` vs ``TARGET``.
- counts (``nb_nll``, ``geometric_count_nll``, ``proportional_ce``, ``gpl_nll``):
  ``gene_logits`` vs ``COUNTS``, optionally depth-shifted ``phi' = phi + s0 log(U / V)``
  (``U`` = ``LIBRARY_SIZE``, ``V`` = number of observable genes; GPL §4.2.3).
- ``wced_loss``: needs a model with a WCED head returning the head outputs ``wced_expressed``
  and ``wced_value`` (B, G); input genes = ``REVEALED``.

An optional z-loss ``alpha (logsumexp_{observable} phi)^2`` on ``gene_logits`` (before any
depth shift) is added when ``z_loss_weight > 0``.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.models.protocol import ModelOutput
from tfmkit.objectives import OBJECTIVES, depth_shift, nb_nll, z_loss
from tfmkit.registry import Registry

CRITERIA: Registry = Registry("criterion")

LOSS_ON = ("all", "masked")
COMMON_OPTIONS = ("library_size", "loss_on", "z_loss_weight", "depth_shift")


class Criterion(nn.Module):
    """Base criterion: gene mask, optional depth shift and z-loss; subclasses pick the inputs.

    Parameters
    ----------
    name
        Objective name in :data:`tfmkit.objectives.OBJECTIVES`.
    n_genes
        Vocabulary genes ``G`` predicted by the model.
    library_size
        Normalisation target ``L`` of the log1p targets (informational; kept for configs).
    loss_on
        ``"all"`` observable genes or only the ``"masked"`` (not revealed) ones.
    z_loss_weight
        ``alpha`` of the z-loss (0 disables).
    depth_shift
        Learn ``s0`` (init 1) and shift logits by ``s0 log(U / V)`` (count objectives only).
    **kwargs
        Extra keyword arguments of the objective (e.g. ``beta`` for ``smooth_l1``).
    """

    #: Batch keys this criterion reads (beyond ``OBSERVABLE``/``REVEALED``).
    batch_keys: tuple[str, ...] = ()
    #: Model output keys this criterion reads.
    output_keys: tuple[str, ...] = ()
    supports_depth_shift = False

    def __init__(
        self,
        name: str,
        *,
        n_genes: int,
        library_size: float = 1e5,
        loss_on: str = "all",
        z_loss_weight: float = 0.0,
        depth_shift: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        if loss_on not in LOSS_ON:
            raise TfmkitError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
        if z_loss_weight < 0:
            raise TfmkitError(f"z_loss_weight must be >= 0, got {z_loss_weight}")
        if depth_shift and not self.supports_depth_shift:
            raise TfmkitError(
                f"depth_shift applies to count objectives (nb_nll, geometric_count_nll, "
                f"proportional_ce, gpl_nll), not {name!r}; remove depth_shift"
            )
        self.name = name
        self.objective = OBJECTIVES.get(name)
        self.n_genes = int(n_genes)
        self.library_size = float(library_size)
        self.loss_on = loss_on
        self.z_loss_weight = float(z_loss_weight)
        self.kwargs = self._check_kwargs(kwargs)
        self.s0 = nn.Parameter(torch.ones(())) if depth_shift else None

    # ------------------------------------------------------------------ helpers
    def _allowed_kwargs(self) -> set[str]:
        fixed = {
            "pred",
            "target",
            "logits",
            "counts",
            "mask",
            "dispersion",
            "expressed_logits",
            "value_pred",
            "input_mask",
        }
        return set(inspect.signature(self.objective).parameters) - fixed

    def _check_kwargs(self, kwargs: dict) -> dict:
        unknown = set(kwargs) - self._allowed_kwargs()
        if unknown:
            raise TfmkitError(
                f"unknown option(s) {sorted(unknown)} for objective {self.name!r}; valid: "
                f"{sorted(self._allowed_kwargs() | set(COMMON_OPTIONS))}"
            )
        return dict(kwargs)

    def _get(self, mapping, key: str, what: str) -> torch.Tensor:
        value = mapping.get(key) if hasattr(mapping, "get") else None
        if value is None:
            have = sorted(mapping.available()) if isinstance(mapping, ModelOutput) else sorted(mapping)
            raise TfmkitError(
                f"objective {self.name!r} needs {what} {key!r}, which is missing; "
                f"available: {have}"
            )
        if value.ndim == 2 and value.shape[-1] != self.n_genes:
            raise TfmkitError(
                f"{what} {key!r} has {value.shape[-1]} genes but the criterion was built for "
                f"n_genes={self.n_genes}; build it with the model's vocabulary size"
            )
        return value

    def observable(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        """``OBSERVABLE`` (B, G) bool, or all True when the batch does not carry it."""
        if K.OBSERVABLE in batch:
            return self._get(batch, K.OBSERVABLE, "batch key").bool()
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)

    def loss_mask(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        """Genes entering the loss (B, G): observable, and not revealed if ``loss_on='masked'``."""
        mask = self.observable(batch, like)
        if self.loss_on == "masked":
            mask = mask & ~self._get(batch, K.REVEALED, "batch key").bool()
        return mask

    def shift(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Apply the learned depth shift ``phi + s0 log(U / V)`` when enabled."""
        if self.s0 is None:
            return logits.float()
        observable = self.observable(batch, logits)
        if K.LIBRARY_SIZE in batch:
            u = batch[K.LIBRARY_SIZE]
        else:
            counts = self._get(batch, K.COUNTS, "batch key")
            u = (counts.float() * observable).sum(-1)
        return depth_shift(logits, u, observable.sum(-1), self.s0)  # (B, G)

    # ------------------------------------------------------------------ forward
    def compute(self, out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        """Per-cell objective value (B,); implemented by each family."""
        raise NotImplementedError

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        """Per-cell loss ``(B,)`` (reduce with ``.mean()``), z-loss included."""
        like = self._get(out, self.output_keys[0], "model output")
        mask = self.loss_mask(batch, like)  # (B, G)
        loss = self.compute(out, batch, mask)  # (B,)
        if self.z_loss_weight > 0:
            logits = self._get(out, "gene_logits", "model output")
            loss = loss + z_loss(logits, self.observable(batch, logits), self.z_loss_weight)
        return loss

    def extra_repr(self) -> str:
        return (
            f"{self.name}, n_genes={self.n_genes}, loss_on={self.loss_on!r}, "
            f"z_loss_weight={self.z_loss_weight}, depth_shift={self.s0 is not None}"
        )


@CRITERIA.register("poisson_nll")
@CRITERIA.register("mse")
@CRITERIA.register("smooth_l1")
class Log1pCriterion(Criterion):
    """``objective(gene_pred, batch[TARGET], mask)``: losses on log1p-normalised values."""

    batch_keys = (K.TARGET,)
    output_keys = ("gene_pred",)

    def compute(self, out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        pred = self._get(out, "gene_pred", "model output").float()  # (B, G)
        target = self._get(batch, K.TARGET, "batch key").float()  # (B, G)
        return self.objective(pred, target, mask, **self.kwargs)


@CRITERIA.register("geometric_count_nll")
@CRITERIA.register("proportional_ce")
@CRITERIA.register("gpl_nll")
class CountCriterion(Criterion):
    """``objective(shift(gene_logits), batch[COUNTS], mask)``: count / ranking likelihoods."""

    batch_keys = (K.COUNTS,)
    output_keys = ("gene_logits",)
    supports_depth_shift = True

    def compute(self, out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        logits = self.shift(self._get(out, "gene_logits", "model output"), batch)  # (B, G)
        counts = self._get(batch, K.COUNTS, "batch key")  # (B, G)
        return self.objective(logits, counts, mask=mask, **self.kwargs)


@CRITERIA.register("nb_nll")
class NBCriterion(CountCriterion):
    """Negative binomial with a learned per-gene dispersion ``r_g = exp(rho_g)`` (init 1).

    ``dispersion_l2`` (``alpha_r``, GPL Suppl. A.1 uses 0.01) adds ``alpha_r mean_g (r_g - 1)^2``
    to every cell's loss.
    """

    def __init__(self, name: str, *, n_genes: int, **kwargs) -> None:
        super().__init__(name, n_genes=n_genes, **kwargs)
        self.log_dispersion = nn.Parameter(torch.zeros(self.n_genes))  # (G,) r = 1

    @property
    def dispersion(self) -> torch.Tensor:
        """Per-gene dispersion ``r_g`` (G,)."""
        return self.log_dispersion.exp()

    def compute(self, out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        logits = self.shift(self._get(out, "gene_logits", "model output"), batch)  # (B, G)
        counts = self._get(batch, K.COUNTS, "batch key")  # (B, G)
        return nb_nll(logits, counts, self.dispersion, mask, **self.kwargs)


@CRITERIA.register("wced_loss")
class WCEDCriterion(Criterion):
    """BMFM WCED: needs the head outputs ``wced_expressed`` and ``wced_value`` (B, G) of a WCED
    head; ``REVEALED`` genes form the input (autoencoder) term, the rest the masking term."""

    batch_keys = (K.TARGET,)
    output_keys = ("wced_expressed", "wced_value")

    def compute(self, out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        target = self._get(batch, K.TARGET, "batch key").float()  # (B, G)
        input_mask = None
        if self.loss_on == "all" and K.REVEALED in batch:
            input_mask = batch[K.REVEALED].bool()  # (B, G) autoencoder vs masking terms
        expressed = self._get(out, "wced_expressed", "model output")  # (B, G)
        value = self._get(out, "wced_value", "model output")  # (B, G)
        return self.objective(expressed, value, target, mask, input_mask)


def build_criterion(
    name: str,
    *,
    n_genes: int,
    library_size: float = 1e5,
    loss_on: str = "all",
    z_loss_weight: float = 0.0,
    depth_shift: bool = False,
    **kwargs,
) -> Criterion:
    """Criterion for objective ``name`` (a name in :data:`CRITERIA`, e.g. ``"gpl_nll"``).

    ``**kwargs`` go to the objective (``beta`` for ``smooth_l1``, ``dispersion_l2`` for
    ``nb_nll``). Raises :class:`TfmkitError` for an unknown name or option.
    """
    if name not in CRITERIA:
        raise TfmkitError(
            f"unknown objective {name!r}; choose one of: {', '.join(CRITERIA.names())}"
        )
    return CRITERIA.get(name)(
        name,
        n_genes=n_genes,
        library_size=library_size,
        loss_on=loss_on,
        z_loss_weight=z_loss_weight,
        depth_shift=depth_shift,
        **kwargs,
    )
