"""Model families behind one protocol (:mod:`tfmkit.models.protocol`) and :func:`build_model`.

Registered families (import registers them): ``txfm`` (TxFM masked autoencoder,
:mod:`tfmkit.models.txfm`), ``bmfm`` (BMFM-style MLM / WCED encoder, :mod:`tfmkit.models.bmfm`),
``gpl_ar`` (GPL permuted-autoregressive transformer with rank-RoPE, :mod:`tfmkit.models.gpl_ar`).
"""

from __future__ import annotations

from tfmkit.models import txfm as _txfm  # noqa: F401  (registers the family)
from tfmkit.models import bmfm as _bmfm  # noqa: F401  (registers the family)
from tfmkit.models import gpl_ar as _gpl_ar  # noqa: F401  (registers the family)
from tfmkit.models.build import build_model, config_from_dict, family_class, model_config
from tfmkit.models.protocol import MODELS, FamilyConfig, FoundationModel, ModelOutput
from tfmkit.models.txfm import PAPER_PARAMS, PRESETS, ModelConfig, TxFM, TxFMConfig

__all__ = ["MODELS", "FamilyConfig", "FoundationModel", "ModelConfig", "ModelOutput",
           "PAPER_PARAMS", "PRESETS", "TxFM", "TxFMConfig", "build_model", "config_from_dict",
           "family_class", "model_config", "preset_config"]


def preset_config(preset: str, **overrides) -> TxFMConfig:
    """Backwards-compatible: the config of a TxFM preset (``tiny``/``S``/``B``/``L``)."""
    return model_config(f"txfm/{preset}", **overrides)
