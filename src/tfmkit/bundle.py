"""A trained model as one object: module + vocabulary + run config + provenance.

:func:`load_model` returns a :class:`TrainedModel`; nothing is patched onto the ``nn.Module``.
Inference (:mod:`tfmkit.inference`) accepts a :class:`TrainedModel`, a model directory, or a bare
:class:`~tfmkit.models.protocol.FoundationModel` together with its ``vocab``
(:func:`as_trained_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tfmkit.errors import TfmkitError


@dataclass
class TrainedModel:
    """A model ready for inference.

    Attributes
    ----------
    module
        The :class:`~tfmkit.models.protocol.FoundationModel` (any family).
    vocab
        Its :class:`~tfmkit.data.vocab.GeneVocab` (token id = ``N_SPECIAL + gene index``).
    run_config
        The :class:`~tfmkit.config.RunConfig` it was trained with (data settings such as ``L``
        and the reveal rule are reused at inference).
    source
        The model directory it was loaded from (``None`` if built in memory).
    step
        Optimiser steps it was trained for.
    provenance
        Free-form record: ``tfmkit_version``, ``parent`` model and ``task`` for fine-tunes, ...
    """

    module: torch.nn.Module
    vocab: object
    run_config: object
    source: str | None = None
    step: int = 0
    provenance: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """Model family name (``txfm``, ...)."""
        return self.module.config.family

    @property
    def model_config(self):
        """The family config dataclass of :attr:`module`."""
        return self.module.config

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device) -> "TrainedModel":
        """Move the module to ``device`` (in place) and return ``self``."""
        self.module.to(device)
        return self

    def eval(self) -> "TrainedModel":
        self.module.eval()
        return self

    def __repr__(self) -> str:
        return (f"TrainedModel({self.family}/{self.model_config.preset}, {self.vocab.n_genes} genes, "
                f"step {self.step}, source={self.source!r})")


def load_model(path, *, device: str = "cpu") -> TrainedModel:
    """Load a model directory written by ``tfmkit pretrain`` / ``tfmkit demo`` (eval mode)."""
    from tfmkit import checkpoint as ckpt
    from tfmkit.config import RunConfig
    from tfmkit.data.vocab import GeneVocab
    from tfmkit.models import build_model

    saved = ckpt.read_checkpoint(path)
    cfg = saved["config"]
    run = RunConfig.from_dict({k: cfg[k] for k in ("model", "data", "train") if k in cfg})
    vocab = GeneVocab.from_dict(saved["vocab"])
    module = build_model(run.model, int(cfg.get("n_genes", vocab.n_genes)),
                         library_size=run.data.library_size, vocab_genes=list(vocab.genes))
    try:
        module.load_state_dict(saved["weights"])
    except RuntimeError as err:
        raise TfmkitError(f"checkpoint {saved['dir']} does not match its config "
                          f"({str(err).splitlines()[0]}); it is corrupt or from another version") from None
    prov = {k: cfg[k] for k in ("tfmkit_version", "parent", "task") if k in cfg}
    return TrainedModel(module.to(device).eval(), vocab, run, str(saved["dir"]),
                        int(cfg.get("step", 0)), prov)


def as_trained_model(model, vocab=None) -> TrainedModel:
    """Accept a :class:`TrainedModel`, a model directory, or a module plus its ``vocab``."""
    if isinstance(model, TrainedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model)
    from tfmkit.models.protocol import FoundationModel

    if isinstance(model, FoundationModel):
        if vocab is None:
            raise TfmkitError("a bare model module needs its gene vocabulary: pass vocab=..., or "
                              "load the model directory with tfmkit.load_model(path)")
        from tfmkit.config import RunConfig

        run = RunConfig(model=model.config)
        run.data.library_size = float(getattr(model, "library_size", run.data.library_size))
        return TrainedModel(model, vocab, run)
    raise TfmkitError(f"expected a model directory, a tfmkit.load_model(...) result or a tfmkit "
                      f"model module, got {type(model).__name__}")
