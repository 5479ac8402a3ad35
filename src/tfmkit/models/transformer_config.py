"""Config fields shared by the transformer families: one source of truth for their names,
defaults and docstrings.

- :class:`TransformerConfig`: width, depth, heads and feed-forward ratio of any transformer
  family (``txfm``, ``bmfm``, ``gpl_ar``);
- :class:`SetEncoderConfig`: adds the pre-LN set encoder
  (:class:`~tfmkit.models.transformer.SetEncoder`: stochastic depth, LayerScale, QK-norm) and the
  token embedding (:class:`~tfmkit.encoders.TokenEmbedding`: gene and expression encoders) of
  the ``txfm`` and ``bmfm`` families.

A family config derives from one of them, adds its own fields and redeclares a field only where
its default differs (e.g. BMFM's summed ``expression_encoder``). :func:`token_embedding` and
:func:`set_encoder` build the modules a :class:`SetEncoderConfig` describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tfmkit.data.vocab import GeneVocab
from tfmkit.encoders import TokenEmbedding
from tfmkit.models.protocol import FamilyConfig
from tfmkit.models.transformer import SetEncoder

#: Special tokens before the first gene's id (PAD, CLS, MASK, PERT): gene ``i`` has token id
#: ``N_SPECIAL_TOKENS + i``.
N_SPECIAL_TOKENS = GeneVocab.N_SPECIAL


@dataclass
class TransformerConfig(FamilyConfig):
    """Size of a transformer family's blocks."""

    dim: int = 128
    """Model width ``d`` (token and hidden-state width)."""
    depth: int = 2
    """Number of transformer blocks."""
    heads: int = 4
    """Attention heads per block (``dim`` must be divisible by it)."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's feed-forward layer as a multiple of ``dim``."""


@dataclass
class SetEncoderConfig(TransformerConfig):
    """A :class:`TransformerConfig` of a set encoder over gene tokens (``txfm``, ``bmfm``)."""

    drop_path: float = 0.0
    """Maximum stochastic-depth rate (linearly increasing over blocks; TxFM Table 6)."""
    layerscale_init: float = 0.1
    """Initial LayerScale gamma; 0 disables LayerScale."""
    qk_norm: bool = False
    """LayerNorm on queries and keys per head (stabilises large models)."""
    gene_encoder: str = "learned"
    """Gene encoding (``tfmkit.encoders.GENE_ENCODERS``)."""
    gene_encoder_kwargs: dict = field(default_factory=dict)
    """Extra constructor arguments of the gene encoder."""
    expression_encoder: str = "concat"
    """Expression encoding (``tfmkit.encoders.EXPRESSION_ENCODERS``); TxFM uses ``concat``: the
    token is ``[E_i ; x_i]``, so the gene embedding has ``d - 1`` dims. A summed encoder (BMFM's)
    makes gene and expression encodings both ``d``-dim and adds them."""
    expression_encoder_kwargs: dict = field(default_factory=dict)
    """Extra constructor arguments of the expression encoder (e.g. ``zero_token: true``)."""


def token_embedding(config: SetEncoderConfig, n_genes: int, vocab_genes: list[str] | None = None,
                    **kwargs) -> TokenEmbedding:
    """The token embedding of ``config`` over ``N_SPECIAL_TOKENS + n_genes`` token ids.

    A ``learned`` gene encoder gets ``padding_idx=0`` (PAD) and a ``pretrained`` one the
    vocabulary's gene names ``vocab_genes``, unless ``gene_encoder_kwargs`` set them; ``kwargs``
    go to :class:`~tfmkit.encoders.TokenEmbedding` (e.g. ``gene_norm``).
    """
    gene_kwargs = dict(config.gene_encoder_kwargs)
    if config.gene_encoder == "learned":
        gene_kwargs.setdefault("padding_idx", 0)
    if config.gene_encoder == "pretrained" and vocab_genes is not None:
        gene_kwargs.setdefault("vocab_genes", list(vocab_genes))
    return TokenEmbedding(N_SPECIAL_TOKENS + n_genes, config.dim, config.gene_encoder,
                          config.expression_encoder, gene_kwargs, config.expression_encoder_kwargs, **kwargs)


def set_encoder(config: SetEncoderConfig) -> SetEncoder:
    """The pre-LN set encoder (CLS + ``depth`` blocks) of ``config``; ``layerscale_init: 0``
    disables LayerScale."""
    return SetEncoder(config.dim, config.depth, config.heads, config.mlp_ratio, config.drop_path,
                      config.layerscale_init or None, config.qk_norm)
