"""TxFM: transformer masked autoencoder of expression (TxFM paper §3, eq. 1).

encoder: ``token_i = [E_i ; x_i]`` for the ``K`` revealed genes, plus a learnable CLS, through a
pre-LN transformer; decoder: ``x_hat = phi(MLP(e_CLS))`` over every vocabulary gene, ``phi`` the
output activation (rectified tanh by default). The model returns hidden states and predictions;
losses live in :mod:`tfmkit.objectives` / :mod:`tfmkit.criterion`.
"""

from __future__ import annotations

import torch
from torch import nn

from tfmkit.encoders import TokenEmbedding
from tfmkit.models.config import ModelConfig
from tfmkit.models.heads import ClsDecoder
from tfmkit.models.transformer import SetEncoder
from tfmkit.objectives import ACTIVATIONS

N_SPECIAL_TOKENS = 4  # PAD, CLS, MASK, PERT (tfmkit.data.vocab.GeneVocab.N_SPECIAL)


class TxFM(nn.Module):
    """Masked autoencoder over gene sets.

    Parameters
    ----------
    config
        Architecture (:class:`ModelConfig`).
    n_genes
        Number of vocabulary genes ``G`` (the decoder predicts all of them). Token ids are
        ``N_SPECIAL_TOKENS + gene index``.
    """

    def __init__(self, config: ModelConfig, n_genes: int) -> None:
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        self.vocab = None  # a tfmkit.data.vocab.GeneVocab, attached by training / load_model
        gene_kwargs = dict(config.gene_encoder_kwargs)
        if config.gene_encoder == "learned":
            gene_kwargs.setdefault("padding_idx", 0)
        self.embed = TokenEmbedding(
            N_SPECIAL_TOKENS + n_genes, config.dim, config.gene_encoder, config.expression_encoder,
            gene_kwargs, config.expression_encoder_kwargs,
        )
        self.encoder = SetEncoder(config.dim, config.depth, config.heads, config.mlp_ratio,
                                  config.drop_path, config.layerscale_init or None, config.qk_norm)
        self.decoder = ClsDecoder(config.dim, n_genes, config.decoder_layers, config.decoder_dim)
        self._activation = ACTIVATIONS.get(config.activation)

    def encode(self, gene_ids: torch.Tensor, values: torch.Tensor,
               padding: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``(B, K+1, D)`` (CLS first) of revealed genes ``gene_ids``/``values`` (B, K)."""
        tokens = self.embed(gene_ids, values)  # (B, K, D)
        return self.encoder(tokens, padding)  # (B, K+1, D)

    def forward(self, gene_ids: torch.Tensor, values: torch.Tensor,
                padding: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Return ``cls`` (B, D), ``logits`` (B, G) decoder pre-activation, ``pred`` (B, G) = phi(logits)."""
        hidden = self.encode(gene_ids, values, padding)  # (B, K+1, D)
        cls = hidden[:, 0]  # (B, D)
        logits = self.decoder(cls)  # (B, G)
        pred = self._activation(logits.float(), self.config.library_size)  # (B, G)
        return {"cls": cls, "logits": logits, "pred": pred}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
