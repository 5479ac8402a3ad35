"""The model protocol every family implements, and the family registry.

A *family* (TxFM masked autoencoder, GPL permuted-AR, BMFM MLM, ...) is one module that

1. defines a config dataclass deriving from :class:`FamilyConfig` (a docstring per field;
   transformer families start from the shared fields of :mod:`tfmkit.models.transformer_config`)
   and a ``presets`` mapping of named sizes;
2. defines an ``nn.Module`` deriving from :class:`FoundationModel` whose ``forward(batch)``
   returns a :class:`ModelOutput`, with :meth:`~FoundationModel.cell_embedding` and
   :meth:`~FoundationModel.gene_tables`;
3. registers the class with ``@MODELS.register("name")``.

Training, inference and evaluation only talk to this protocol; tasks declare which
:class:`ModelOutput` fields they need and :func:`tfmkit.tasks.check_compatible` compares them
with the family's :attr:`FoundationModel.outputs` when a config is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from torch import nn

from tfmkit.registry import Registry

#: Model families by name (``txfm``, ...): each value is a :class:`FoundationModel` subclass.
MODELS: Registry = Registry("model family")

POOLINGS = ("cls", "mean", "cls+mean")


@dataclass
class FamilyConfig:
    """Fields shared by every family's architecture config."""

    family: str = "txfm"
    """Model family name in :data:`MODELS`."""
    preset: str = "tiny"
    """Name of the preset these values started from (informational once resolved)."""


@dataclass
class ModelOutput:
    """What a model returns; each family fills the fields it produces (others stay ``None``).

    Shapes: ``B`` cells, ``T`` tokens, ``D`` width, ``G`` vocabulary genes.
    """

    cell: torch.Tensor | None = None
    """``(B, D)`` cell embedding (TxFM: the final CLS state)."""
    gene_logits: torch.Tensor | None = None
    """``(B, G)`` per-gene logits over the whole vocabulary (pre-activation)."""
    gene_pred: torch.Tensor | None = None
    """``(B, G)`` per-gene predictions after the output activation (log1p space for TxFM)."""
    token_states: torch.Tensor | None = None
    """``(B, T, D)`` final hidden state of each input token (special tokens excluded)."""
    token_mask: torch.Tensor | None = None
    """``(B, T)`` bool, True where ``token_states`` is a real (not padded) token."""
    token_outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-token outputs, e.g. ``{"value": (B, T)}`` for an MLM value head."""
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    """Cell-level head outputs, e.g. ``{"wced_expressed": (B, G), "celltype": (B, C)}``."""

    def available(self) -> set[str]:
        """Names of the fields and head/token outputs that are present."""
        names = {f.name for f in fields(self)
                 if f.name not in ("token_outputs", "heads") and getattr(self, f.name) is not None}
        return names | set(self.heads) | {f"token:{k}" for k in self.token_outputs}

    def get(self, name: str) -> torch.Tensor | None:
        """A field, a head output or a ``token:<name>`` output by name (``None`` if absent)."""
        if name.startswith("token:"):
            return self.token_outputs.get(name[len("token:"):])
        if name in self.heads:
            return self.heads[name]
        return getattr(self, name, None) if name in _FIELD_NAMES else None


_FIELD_NAMES = frozenset(f.name for f in fields(ModelOutput))


class FoundationModel(nn.Module):
    """Base class of every model family (see the module docstring).

    Subclasses set the class attributes and implement :meth:`forward`,
    :meth:`cell_embedding` and :meth:`gene_tables`.
    """

    #: Registered family name.
    family: ClassVar[str] = ""
    #: The family's config dataclass (a :class:`FamilyConfig` subclass).
    config_class: ClassVar[type] = FamilyConfig
    #: Named presets: preset name -> dict of config overrides.
    presets: ClassVar[dict[str, dict]] = {}
    #: :class:`ModelOutput` fields / head names that :meth:`forward` produces.
    outputs: ClassVar[frozenset[str]] = frozenset()
    #: Batch keys (:mod:`tfmkit.data.keys`) that :meth:`forward` reads.
    batch_fields: ClassVar[tuple[str, ...]] = ()

    config: FamilyConfig
    n_genes: int

    @classmethod
    def outputs_for(cls, config) -> frozenset[str]:
        """What a model of ``config`` produces (families with optional heads narrow
        :attr:`outputs`); used by :func:`tfmkit.tasks.check_compatible` at config load."""
        return cls.outputs

    def forward(self, batch: dict) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def embedding_dim(self) -> int:
        """Width ``D`` of :meth:`cell_embedding` with ``pooling='cls'`` or ``'mean'``."""
        return int(self.config.dim)

    def encode_cells(self, batch: dict) -> ModelOutput:
        """The fields :meth:`cell_embedding` pools (``cell``, ``token_states``, ``token_mask``).

        Defaults to :meth:`forward`; a family overrides it to skip work an embedding does not
        need (e.g. TxFM's whole-vocabulary decoder).
        """
        return self.forward(batch)

    def cell_embedding(self, batch: dict, pooling: str = "cls") -> torch.Tensor:
        """``(B, D)`` embedding of each cell (``(B, 2D)`` for ``cls+mean``).

        ``cls``: the cell state of :class:`ModelOutput`; ``mean``: mean of the non-padded
        token states; ``cls+mean``: both, concatenated.
        """
        if pooling not in POOLINGS:
            from tfmkit.errors import TfmkitError

            raise TfmkitError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        return pool(self.encode_cells(batch), pooling)  # (B, D) or (B, 2D)

    def gene_tables(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """Per-gene learned vectors by kind, each ``(G, d)`` in vocabulary order."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def mean_pool(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``states (B, T, D)`` over tokens where ``mask (B, T)`` is True -> ``(B, D)``."""
    if mask is None:
        return states.mean(dim=1)  # (B, D)
    w = mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (states * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B, D)


def pool(output: ModelOutput, pooling: str = "cls") -> torch.Tensor:
    """``(B, D)`` cell embedding of a model ``output`` (``(B, 2D)`` for ``cls+mean``).

    ``pooling`` (one of :data:`POOLINGS`): ``cls``, the ``cell`` state; ``mean``, the mean of
    the non-padded ``token_states``; ``cls+mean``, both, concatenated.
    """
    parts = []
    if pooling in ("cls", "cls+mean"):
        parts.append(output.cell)  # (B, D)
    if pooling in ("mean", "cls+mean"):
        parts.append(mean_pool(output.token_states, output.token_mask))  # (B, D)
    return torch.cat(parts, dim=-1)  # (B, D) or (B, 2D)
