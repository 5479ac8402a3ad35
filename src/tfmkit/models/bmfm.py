"""BMFM-RNA-style encoder with MLM and WCED heads (BMFM-RNA §2.2.5-2.2.6, §2.3) — the ``bmfm`` family.

Each token is the **sum** of a gene encoding and an expression encoding (the shipped encoders of
:mod:`tfmkit.encoders`: ``learned``/``pretrained`` genes; ``mlp``, ``periodic``, bins ... for
values). A token whose value is masked (batch key ``VALUE_MASKED``) gets a learned MASK vector
instead of its expression encoding; a token whose gene is masked carries the vocabulary's MASK id.
With ``depth_tokens`` two extra tokens encode ``log10(1 + depth)`` of the input and of the
original cell (scFoundation's ``S`` and ``T``; BMFM's RDA model). A learnable CLS and a pre-LN
transformer without positional encoding (:class:`~tfmkit.models.transformer.SetEncoder`) follow.

Heads, chosen by the config (the ``tiny`` preset enables all of them):

- ``token_heads`` (per token, from its final state): ``value`` (B, T) regression of the
  log1p-normalised value, ``is_zero`` (B, T) logit that the value is 0, ``value_bins``
  (B, T, n_bins) bin logits, ``gene`` (B, T, G) gene-identity logits (dense, like a BERT
  masked-LM head). When the batch carries ``mlm_gene_target`` (training) the gene head is
  evaluated at the gene-masked tokens only and returned as ``token_outputs["gene_masked"]``
  ``(N, G)``, rows in the row-major order of ``mlm_gene_target >= 0``: the dense ``(B, T, G)``
  logits cost ``T / N`` times more (measured on CPU, B=32, T=256, G=16k: +5 s per step);
- ``wced_head`` (from the CLS state only, BMFM Fig. 2): ``wced_expressed`` and ``wced_value``,
  two ``(B, G)`` vectors over the whole vocabulary; the model then also returns
  ``gene_logits = wced_value`` and ``gene_pred = sigmoid(wced_expressed) * wced_value`` (expected
  log1p value under the hurdle reading) so whole-profile evaluations apply.

Losses live in the tasks: ``mlm`` / ``multitask`` (:mod:`tfmkit.tasks.mlm`,
:mod:`tfmkit.tasks.multitask`) and ``pretrain`` with ``train.objective: wced_loss``. Cell-level
classifiers (cell type, adversarial batch) are parameters of the ``multitask`` task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.models.heads import ResidualMlpLayer
from tfmkit.models.protocol import MODELS, FoundationModel, ModelOutput
from tfmkit.models.transformer_config import N_SPECIAL_TOKENS, SetEncoderConfig, set_encoder, token_embedding

TOKEN_HEADS = ("value", "is_zero", "value_bins", "gene")
# batch keys of tfmkit.data.collate_bmfm (strings repeated so the model does not import collators)
VALUE_MASKED, DEPTH, MLM_GENE_TARGET = "value_masked", "depth", "mlm_gene_target"


@dataclass
class BMFMConfig(SetEncoderConfig):
    """Architecture of a BMFM-style encoder (BMFM-RNA §2.2.6, §2.3): the shared set-encoder
    fields (:class:`~tfmkit.models.transformer_config.SetEncoderConfig`; the gene and expression
    encodings are both ``d``-dim and summed) plus the MLM / WCED heads."""

    family: str = "bmfm"
    """Model family name (always ``bmfm`` here)."""
    expression_encoder: str = "mlp"
    """Summed expression encoding (``tfmkit.encoders.EXPRESSION_ENCODERS``, not ``concat``);
    BMFM's MLM+Multitask model uses ``mlp``, its MLM+RDA model ``periodic``."""
    token_heads: list = field(default_factory=lambda: ["value", "is_zero"])
    """Per-token heads to build, a subset of ``value``, ``is_zero``, ``value_bins``, ``gene``."""
    n_bins: int = 16
    """Output bins of the ``value_bins`` head (bin 0 = zero expression)."""
    wced_head: bool = False
    """Build the whole-cell expression decoder from the CLS state (``wced_expressed``/``wced_value``)."""
    wced_layers: int = 2
    """Residual MLP layers of the WCED decoder trunk (0 = linear)."""
    depth_tokens: bool = False
    """Add the two read-depth tokens (input and original total counts; needs batch key ``depth``)."""


#: ``tiny`` for CPU tests (every head on); ``S`` = TxFM-S width for comparisons; ``B`` = the BERT
#: size of the BMFM-RNA paper's models (768 wide, 12 heads, 12 layers, §2.3).
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=128, depth=2, heads=4, token_heads=list(TOKEN_HEADS), wced_head=True),
    "S": dict(dim=384, depth=6, heads=6, drop_path=0.1),
    "B": dict(dim=768, depth=12, heads=12, drop_path=0.1),
}


class WCEDHead(nn.Module):
    """BMFM WCED decoder: CLS ``(B, D)`` -> residual MLP trunk -> two ``(B, G)`` vectors
    (expressed/not logits, log1p values)."""

    def __init__(self, dim: int, n_genes: int, n_layers: int = 2) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[ResidualMlpLayer(dim) for _ in range(n_layers)], nn.LayerNorm(dim))
        self.expressed = nn.Linear(dim, n_genes)
        self.value = nn.Linear(dim, n_genes)

    def forward(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(cls)  # (B, D)
        return self.expressed(h), self.value(h)  # (B, G), (B, G)


@MODELS.register("bmfm")
class BMFM(FoundationModel):
    """BMFM-style set encoder with optional MLM token heads and a WCED head (module docstring).

    Parameters
    ----------
    config
        Architecture (:class:`BMFMConfig`).
    n_genes
        Vocabulary genes ``G``; token ids are ``N_SPECIAL_TOKENS + gene index``.
    library_size
        Normalisation target ``L`` of the data (kept for the record; no output bound uses it).
    vocab_genes
        Vocabulary gene names for a ``pretrained`` gene encoder.
    """

    family = "bmfm"
    config_class = BMFMConfig
    presets = PRESETS
    outputs = frozenset({"cell", "token_states", "token_mask", "token:value", "token:is_zero",
                         "token:value_bins", "token:gene", "wced_expressed", "wced_value",
                         "gene_logits", "gene_pred"})
    batch_fields = (K.GENE_IDS, K.VALUES, K.PADDING, VALUE_MASKED, DEPTH)

    def __init__(self, config: BMFMConfig, n_genes: int, *, library_size: float = 1e5,
                 vocab_genes: list[str] | None = None) -> None:
        super().__init__()
        bad = sorted(set(config.token_heads) - set(TOKEN_HEADS))
        if bad:
            raise TfmkitError(f"unknown bmfm token head(s) {bad}; choose from {', '.join(TOKEN_HEADS)}")
        if config.expression_encoder == "concat":
            raise TfmkitError("bmfm sums gene and expression tokens; choose a summed "
                              "model.expression_encoder (mlp, periodic, hard_bin, log_bin, soft_bin)")
        self.config, self.n_genes, self.library_size = config, n_genes, float(library_size)
        D = config.dim
        self.embed = token_embedding(config, n_genes, vocab_genes)
        self.mask_value = nn.Parameter(torch.randn(D) * 0.02)  # MASK vector of masked values
        if config.depth_tokens:
            self.depth_type = nn.Parameter(torch.randn(2, D) * 0.02)  # (2, D) input / original
            self.depth_mlp = nn.Sequential(nn.Linear(1, D), nn.GELU(), nn.Linear(D, D))
        self.encoder = set_encoder(config)
        sizes = {"value": 1, "is_zero": 1, "value_bins": config.n_bins, "gene": n_genes}
        self.token_heads = nn.ModuleDict({h: nn.Linear(D, sizes[h]) for h in TOKEN_HEADS
                                          if h in config.token_heads})
        self.wced = WCEDHead(D, n_genes, config.wced_layers) if config.wced_head else None
        # what this instance produces (the class attribute lists every configurable output)
        self.outputs = type(self).outputs_for(config)

    @classmethod
    def outputs_for(cls, config) -> frozenset[str]:
        """The heads switched on in ``config`` (the class attribute lists every possible one)."""
        return frozenset({"cell", "token_states", "token_mask"}
                         | {f"token:{h}" for h in TOKEN_HEADS if h in config.token_heads}
                         | ({"wced_expressed", "wced_value", "gene_logits", "gene_pred"}
                            if config.wced_head else set()))

    def tokens(self, batch: dict) -> torch.Tensor:
        """Input tokens ``(B, K, D)``: gene + expression encodings, MASK vector where masked."""
        gene = self.embed.gene(batch[K.GENE_IDS])  # (B, K, D)
        expr = self.embed.expression(batch[K.VALUES]).to(gene.dtype)  # (B, K, D)
        masked = batch.get(VALUE_MASKED)
        if masked is not None:
            expr = torch.where(masked.unsqueeze(-1), self.mask_value.to(expr.dtype), expr)  # (B, K, D)
        return gene + expr  # (B, K, D)

    def encode_cells(self, batch: dict) -> ModelOutput:
        """CLS and token states (depth tokens excluded); no heads."""
        x = self.tokens(batch)  # (B, K, D)
        padding = batch.get(K.PADDING)
        B, k, _ = x.shape
        if self.config.depth_tokens:
            if DEPTH not in batch:
                raise TfmkitError("model.depth_tokens needs the batch key 'depth' (train.task mlm or "
                                  "multitask with objective mlm); set model.depth_tokens: false")
            d = torch.log10(1.0 + batch[DEPTH].float()).unsqueeze(-1)  # (B, 2, 1)
            x = torch.cat([x, (self.depth_type + self.depth_mlp(d)).to(x.dtype)], dim=1)  # (B, K+2, D)
            if padding is not None:
                padding = torch.cat([padding, padding.new_zeros(B, 2)], dim=1)  # (B, K+2)
        hidden = self.encoder(x, padding)  # (B, 1+K(+2), D)
        mask = batch.get(K.PADDING)
        return ModelOutput(cell=hidden[:, 0], token_states=hidden[:, 1:1 + k],
                           token_mask=None if mask is None else ~mask)

    def forward(self, batch: dict) -> ModelOutput:
        """Encoder states plus the configured token heads and WCED head."""
        out = self.encode_cells(batch)
        h = out.token_states  # (B, K, D)
        for name, head in self.token_heads.items():
            if name == "gene" and MLM_GENE_TARGET in batch:  # training: only the gene-masked tokens
                out.token_outputs["gene_masked"] = head(h[batch[MLM_GENE_TARGET] >= 0])  # (N, G)
                continue
            y = head(h)  # (B, K, n)
            out.token_outputs[name] = y.squeeze(-1) if name in ("value", "is_zero") else y  # (B, K[, n])
        if self.wced is not None:
            e, v = self.wced(out.cell)  # (B, G), (B, G)
            out.heads["wced_expressed"], out.heads["wced_value"] = e, v
            out.gene_logits = v  # (B, G)
            out.gene_pred = torch.sigmoid(e.float()) * v.float()  # (B, G)
        return out

    def gene_tables(self) -> dict[str, torch.Tensor]:
        """``encoder``: input gene vectors (when the gene encoder has a table); ``mlm_gene``: rows
        of the masked-gene head; ``wced_value`` / ``wced_expressed``: rows of the WCED outputs."""
        tables = {}
        gene = self.embed.gene
        if hasattr(gene, "gene_table"):
            tables["encoder"] = gene.gene_table()[N_SPECIAL_TOKENS:]  # (G, D)
        if "gene" in self.token_heads:
            tables["mlm_gene"] = self.token_heads["gene"].weight  # (G, D)
        if self.wced is not None:
            tables["wced_value"] = self.wced.value.weight  # (G, D)
            tables["wced_expressed"] = self.wced.expressed.weight  # (G, D)
        return tables
