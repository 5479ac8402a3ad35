"""Model zoo: blocks, transformer encoder, heads, presets and :func:`build_model`."""

from __future__ import annotations

from tfmkit.models.config import PAPER_PARAMS, PRESETS, ModelConfig, preset_config
from tfmkit.models.txfm import TxFM

__all__ = ["build_model", "ModelConfig", "PRESETS", "PAPER_PARAMS", "TxFM", "preset_config"]


def build_model(preset: str | ModelConfig, n_genes: int, **overrides) -> TxFM:
    """Build a TxFM of a named preset (``tiny``, ``S``, ``B``, ``L``) or a :class:`ModelConfig`.

    ``overrides`` replace config fields, e.g. ``build_model("S", 20000, decoder_layers=0)``.
    """
    from dataclasses import replace

    cfg = replace(preset, **overrides) if isinstance(preset, ModelConfig) else preset_config(preset, **overrides)
    return TxFM(cfg, n_genes)
