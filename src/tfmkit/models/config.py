"""Typed model configuration and the size presets (TxFM Table 6)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tfmkit.errors import TfmkitError


@dataclass
class ModelConfig:
    """Architecture of a TxFM-style masked autoencoder."""

    preset: str = "tiny"
    """Name of the preset these values started from (informational once resolved)."""
    dim: int = 128
    """Model width ``d``; with the ``concat`` encoder the gene embedding has ``d - 1`` dims."""
    depth: int = 2
    """Number of transformer encoder blocks."""
    heads: int = 4
    """Attention heads per block (``dim`` must be divisible by it)."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's feed-forward layer as a multiple of ``dim``."""
    drop_path: float = 0.0
    """Maximum stochastic-depth rate (linearly increasing over blocks; TxFM Table 6)."""
    layerscale_init: float = 0.1
    """Initial LayerScale gamma; 0 disables LayerScale."""
    qk_norm: bool = False
    """LayerNorm on queries and keys per head (stabilises large models)."""
    decoder_layers: int = 4
    """Residual MLP layers of the CLS decoder; 0 = linear decoder (TxFM Table 5e)."""
    decoder_dim: int | None = None
    """Decoder hidden width (default ``dim``). The paper does not state it; the S preset uses
    ``1.5 * dim`` so that parameter counts match the paper's 57M/159M/403M (see ``PRESETS``)."""
    activation: str = "rectified_tanh"
    """Decoder output activation (``tfmkit.objectives.ACTIVATIONS``)."""
    gene_encoder: str = "learned"
    """Gene encoding (``tfmkit.encoders.GENE_ENCODERS``)."""
    gene_encoder_kwargs: dict = field(default_factory=dict)
    """Extra constructor arguments for the gene encoder."""
    expression_encoder: str = "concat"
    """Expression encoding (``tfmkit.encoders.EXPRESSION_ENCODERS``); TxFM uses ``concat``."""
    expression_encoder_kwargs: dict = field(default_factory=dict)
    """Extra constructor arguments for the expression encoder."""
    library_size: float = 1e5
    """Normalisation target ``L``; also the bound of ``rectified_tanh`` (``log(L+1)``)."""


#: Encoder blocks / heads / width from TxFM Table 6 (S, B, L) plus ``tiny`` for CPU tests/demo.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=128, depth=2, heads=4, decoder_layers=4, drop_path=0.0),
    "S": dict(dim=384, depth=6, heads=6, decoder_layers=4, decoder_dim=576, drop_path=0.1),
    "B": dict(dim=768, depth=12, heads=12, decoder_layers=4, drop_path=0.1),
    "L": dict(dim=1024, depth=24, heads=16, decoder_layers=4, drop_path=0.3),
}

#: Parameter counts reported in TxFM Table 6 for a 44,349-gene vocabulary.
PAPER_PARAMS = {"S": 57e6, "B": 159e6, "L": 403e6}


def preset_config(preset: str, **overrides) -> ModelConfig:
    """``ModelConfig`` of a named preset with ``overrides`` applied."""
    if preset not in PRESETS:
        raise TfmkitError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = ModelConfig(preset=preset, **PRESETS[preset])
    try:
        return replace(cfg, **overrides)
    except TypeError as err:
        raise TfmkitError(f"bad model override: {err}") from None
