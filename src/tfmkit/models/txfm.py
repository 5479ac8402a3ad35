"""TxFM: transformer masked autoencoder of expression (TxFM paper §3, eq. 1) — the ``txfm`` family.

encoder: ``token_i = [E_i ; x_i]`` for the ``K`` revealed genes, plus a learnable CLS, through a
pre-LN transformer; decoder: ``x_hat = phi(MLP(e_CLS))`` over every vocabulary gene, ``phi`` the
output activation (rectified tanh by default, bounded by ``log(L + 1)``). The model returns
hidden states and predictions as a :class:`~tfmkit.models.protocol.ModelOutput`; losses live in
:mod:`tfmkit.objectives` and the tasks of :mod:`tfmkit.tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tfmkit.data import keys as K
from tfmkit.models.heads import ClsDecoder
from tfmkit.models.protocol import MODELS, FoundationModel, ModelOutput
from tfmkit.models.transformer_config import N_SPECIAL_TOKENS, SetEncoderConfig, set_encoder, token_embedding
from tfmkit.objectives import ACTIVATIONS


@dataclass
class TxFMConfig(SetEncoderConfig):
    """Architecture of a TxFM-style masked autoencoder: the shared set-encoder fields
    (:class:`~tfmkit.models.transformer_config.SetEncoderConfig`) plus the CLS decoder (the
    ``library_size`` ``L`` is a data setting, ``data.library_size``, passed to the model when it
    is built)."""

    family: str = "txfm"
    """Model family name (always ``txfm`` here)."""
    decoder_layers: int = 4
    """Residual MLP layers of the CLS decoder; 0 = linear decoder (TxFM Table 5e)."""
    decoder_dim: int | None = None
    """Decoder hidden width (default ``dim``). The paper does not state it; the S preset uses
    ``1.5 * dim`` so that parameter counts match the paper's 57M/159M/403M (see ``PRESETS``)."""
    activation: str = "rectified_tanh"
    """Decoder output activation (``tfmkit.objectives.ACTIVATIONS``)."""
    gene_norm: bool = False
    """Rescale each gene vector ``E_i`` to unit RMS before it meets the expression encoding
    (``[sqrt(d-1) E_i/||E_i|| ; x_i]`` with ``concat``), so gene identity is visible in expressed
    tokens (see :class:`tfmkit.encoders.TokenEmbedding`); ``False`` = TxFM as published."""


#: Backwards-compatible name of the TxFM config.
ModelConfig = TxFMConfig

#: Encoder blocks / heads / width from TxFM Table 6 (S, B, L) plus ``tiny`` for CPU tests/demo.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=128, depth=2, heads=4, decoder_layers=4, drop_path=0.0),
    "S": dict(dim=384, depth=6, heads=6, decoder_layers=4, decoder_dim=576, drop_path=0.1),
    "B": dict(dim=768, depth=12, heads=12, decoder_layers=4, drop_path=0.1),
    "L": dict(dim=1024, depth=24, heads=16, decoder_layers=4, drop_path=0.3),
}

#: Parameter counts reported in TxFM Table 6 for a 44,349-gene vocabulary.
PAPER_PARAMS = {"S": 57e6, "B": 159e6, "L": 403e6}


@MODELS.register("txfm")
class TxFM(FoundationModel):
    """Masked autoencoder over gene sets.

    Parameters
    ----------
    config
        Architecture (:class:`TxFMConfig`).
    n_genes
        Number of vocabulary genes ``G`` (the decoder predicts all of them). Token ids are
        ``N_SPECIAL_TOKENS + gene index``.
    library_size
        Normalisation target ``L`` of the data: bounds ``rectified_tanh`` at ``log(L + 1)``.
    vocab_genes
        Vocabulary gene names, for a ``pretrained`` gene encoder to match its table rows to
        token ids (not stored in the config).
    """

    family = "txfm"
    config_class = TxFMConfig
    presets = PRESETS
    outputs = frozenset({"cell", "gene_logits", "gene_pred", "token_states", "token_mask"})
    batch_fields = (K.GENE_IDS, K.VALUES, K.PADDING)

    def __init__(self, config: TxFMConfig, n_genes: int, *, library_size: float = 1e5,
                 vocab_genes: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        self.library_size = float(library_size)
        self.embed = token_embedding(config, n_genes, vocab_genes, gene_norm=config.gene_norm)
        self.encoder = set_encoder(config)
        self.decoder = ClsDecoder(config.dim, n_genes, config.decoder_layers, config.decoder_dim)
        self._activation = ACTIVATIONS.get(config.activation)

    def encode(self, gene_ids: torch.Tensor, values: torch.Tensor,
               padding: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``(B, K+1, D)`` (CLS first) of revealed genes ``gene_ids``/``values`` (B, K)."""
        tokens = self.embed(gene_ids, values)  # (B, K, D)
        return self.encoder(tokens, padding)  # (B, K+1, D)

    def encode_cells(self, batch: dict) -> ModelOutput:
        """CLS and token states only (no decoder): what :meth:`cell_embedding` pools."""
        padding = batch.get(K.PADDING)
        hidden = self.encode(batch[K.GENE_IDS], batch[K.VALUES], padding)  # (B, K+1, D)
        return ModelOutput(cell=hidden[:, 0], token_states=hidden[:, 1:],
                           token_mask=None if padding is None else ~padding)

    def forward(self, batch: dict) -> ModelOutput:
        """CLS state, decoder logits and ``pred = phi(logits)`` over all ``G`` genes (TxFM eq. 1)."""
        out = self.encode_cells(batch)
        out.gene_logits = self.decoder(out.cell)  # (B, G)
        out.gene_pred = self._activation(out.gene_logits.float(), self.library_size)  # (B, G)
        return out

    def gene_tables(self) -> dict[str, torch.Tensor]:
        """``encoder``: input gene tokens ``E_i`` (when the gene encoder has a table);
        ``decoder``: rows of the decoder output layer (TxFM §B.3 "decoder gene weights")."""
        tables = {"decoder": self.decoder.gene_table()}  # (G, H)
        gene = self.embed.gene
        if hasattr(gene, "gene_table"):
            tables["encoder"] = gene.gene_table()[N_SPECIAL_TOKENS:]  # (G, d_gene)
        return tables
