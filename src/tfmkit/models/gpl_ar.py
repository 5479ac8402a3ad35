"""GPL permuted-autoregressive transformer — the ``gpl_ar`` family (GPL paper §4.1-4.2).

Input: a cell's sampled expressed genes plus ~10% undetected genes, in random order
(:class:`tfmkit.data.collate_ar.AutoregressiveCollator`), each a learned gene token. A causal
pre-LN transformer (:mod:`tfmkit.models.rank_rope`) whose attention is rotated by each gene's
*expression rank* (rank RoPE) and whose LayerNorms are modulated by categorical ``obs`` metadata
(AdaLN) produces, at every position ``t``, one logit per vocabulary gene from the genes at
positions ``<= t``; :class:`tfmkit.tasks.autoregressive.AutoregressiveTask` scores them with the
exact GPL likelihood of the whole cell's ranking.

Outputs (:class:`~tfmkit.models.protocol.ModelOutput`): ``token_outputs["gene_logits"]``
``(B, T, G)`` per-position logits; ``gene_logits`` ``(B, G)`` the logits at each cell's last
token (the prediction after seeing the whole sequence, GPL Suppl. D.1); ``token_states``
``(B, T, D)`` final states; ``cell`` ``(B, D)`` the **cell embedding = mean of the final states
of the non-padded tokens** (there is no CLS token; every prefix summary counts equally, so the
embedding does not hinge on which gene happens to come last).

Metadata categories are **fixed in the config** (``conditions: {obs column: [categories]}``):
the embedding tables are sized from it, so a saved model reloads from its own config without
seeing data. Index 0 of every table is *unknown*, a zero vector: missing values, and at
inference categories (or columns) the config does not list, use it; ``condition_dropout``
trains the model to work with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tfmkit.data import keys as K
from tfmkit.data.collate_ar import CONDITIONS, RANKS, dense_ranks
from tfmkit.errors import TfmkitError
from tfmkit.models.protocol import MODELS, FoundationModel, ModelOutput, mean_pool
from tfmkit.models.rank_rope import CausalRankBlock, causal_mask, rope_tables
from tfmkit.models.transformer_config import N_SPECIAL_TOKENS, TransformerConfig


@dataclass
class GPLARConfig(TransformerConfig):
    """Architecture and input construction of the GPL permuted-AR transformer: the shared
    :class:`~tfmkit.models.transformer_config.TransformerConfig` sizes (``dim`` is the width of
    the gene tokens and hidden states; the ``depth`` blocks are causal; ``dim / heads`` must be
    even for RoPE) plus the fields below (the number of expressed genes per cell ``N`` is
    ``data.n_revealed``)."""

    family: str = "gpl_ar"
    """Model family name (always ``gpl_ar`` here)."""
    qk_norm: bool = True
    """LayerNorm on queries and keys per head before RoPE (GPL §4.1: all models use it)."""
    rope_base: float = 10000.0
    """RoPE base ``b``: channel pair ``i`` rotates by ``rank * b^(-2i/Dh)``."""
    undetected_fraction: float = 0.1
    """Undetected (observable, zero-count) genes appended per expressed gene taken (GPL: ~10%)."""
    conditions: dict = field(default_factory=dict)
    """AdaLN metadata: ``obs`` column -> ordered list of its categories (fixed here so a saved
    model reloads unchanged; index 0 = unknown). Empty = no conditioning."""
    condition_dim: int | None = None
    """Width of the categorical condition embeddings (default ``dim``)."""
    condition_dropout: float = 0.1
    """Training probability of replacing each condition by *unknown* (what unseen categories
    map to at inference)."""


#: ``tiny`` for CPU tests/demo; ``S`` at TxFM-S width (384 x 6 blocks, for equal-width
#: comparisons); ``paper_*``: GPL §4.3 table (d_head 128, 32 layers; ~50M..2B parameters).
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=128, depth=2, heads=4),
    "S": dict(dim=384, depth=6, heads=6),
    "paper_xs": dict(dim=256, depth=32, heads=2),
    "paper_s": dict(dim=512, depth=32, heads=4),
    "paper_m": dict(dim=1024, depth=32, heads=8),
    "paper_l": dict(dim=1536, depth=32, heads=12),
}


@MODELS.register("gpl_ar")
class GPLAR(FoundationModel):
    """Causal rank-RoPE transformer over permuted gene tokens (see the module docstring).

    Parameters
    ----------
    config
        Architecture (:class:`GPLARConfig`).
    n_genes
        Vocabulary genes ``G``; token ids are ``N_SPECIAL_TOKENS + gene index``.
    library_size
        Normalisation target ``L`` (kept for the protocol; ranks do not depend on it).
    vocab_genes
        Unused (the gene tokens are learned).
    """

    family = "gpl_ar"
    config_class = GPLARConfig
    presets = PRESETS
    outputs = frozenset({"cell", "gene_logits", "token_states", "token_mask", "token:gene_logits"})
    batch_fields = (K.GENE_IDS, K.PADDING, RANKS, CONDITIONS)

    def __init__(self, config: GPLARConfig, n_genes: int, *, library_size: float = 1e5,
                 vocab_genes: list[str] | None = None) -> None:
        super().__init__()
        if (config.dim // max(config.heads, 1)) % 2 or config.dim % max(config.heads, 1):
            raise TfmkitError(f"gpl_ar needs dim divisible by heads with an even head width "
                              f"(rank RoPE), got dim={config.dim}, heads={config.heads}")
        self.config = config
        self.n_genes = n_genes
        self.library_size = float(library_size)
        d = config.dim
        self.gene = nn.Embedding(N_SPECIAL_TOKENS + n_genes, d, padding_idx=0)
        nn.init.normal_(self.gene.weight, std=0.02)
        with torch.no_grad():
            self.gene.weight[0].zero_()
        self.condition_columns = sorted(config.conditions)
        cd = (config.condition_dim or d) if self.condition_columns else 0
        self.cond = nn.ModuleList(
            nn.Embedding(len(config.conditions[c]) + 1, cd, padding_idx=0) for c in self.condition_columns)
        self.blocks = nn.ModuleList(CausalRankBlock(d, config.heads, config.mlp_ratio, config.qk_norm, cd)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_genes)

    # ------------------------------------------------------------------ pieces
    def _ranks(self, batch: dict, padding: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` RoPE positions: the batch's ``RANKS``, else dense ranks of ``VALUES`` among
        the cell's tokens (for batches of other collators)."""
        if batch.get(RANKS) is not None:
            return batch[RANKS].float()
        if batch.get(K.VALUES) is None:
            raise TfmkitError("gpl_ar needs token ranks (batch 'ranks') or values (batch 'values')")
        return dense_ranks(batch[K.VALUES], ~padding)  # (B, T)

    def _condition(self, batch: dict) -> torch.Tensor | None:
        """``(B, Dc)`` sum of the condition embeddings, or ``None`` without conditioning."""
        cond = batch.get(CONDITIONS)
        if not self.condition_columns or cond is None:
            return None
        if cond.shape[-1] != len(self.condition_columns):
            raise TfmkitError(f"batch has {cond.shape[-1]} condition columns, the model was built for "
                              f"{len(self.condition_columns)} ({', '.join(self.condition_columns)})")
        return sum(emb(cond[:, j]) for j, emb in enumerate(self.cond))  # (B, Dc)

    def _prepare(self, batch: dict):
        ids = batch[K.GENE_IDS]  # (B, T)
        padding = batch.get(K.PADDING)
        padding = torch.zeros_like(ids, dtype=torch.bool) if padding is None else padding.bool()  # (B, T)
        rope = rope_tables(self._ranks(batch, padding), self.config.dim // self.config.heads,
                           self.config.rope_base)
        mask = causal_mask(padding, ids.shape[1], ids.device)  # (B, 1, T, T)
        return self.gene(ids), padding, rope, mask, self._condition(batch)  # (B, T, D), ...

    def hidden_states(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (normed) token states ``(B, T, D)`` and the padding mask ``(B, T)``."""
        x, padding, rope, mask, cond = self._prepare(batch)
        for blk in self.blocks:
            x = blk(x, rope, mask, cond)  # (B, T, D)
        return self.norm(x), padding

    @torch.no_grad()
    def attention_logits(self, batch: dict, layer: int = 0) -> torch.Tensor:
        """Diagnostic: block ``layer``'s attention logits before the causal mask, ``(B, H, T, T)``."""
        x, padding, rope, mask, cond = self._prepare(batch)
        for blk in self.blocks[:layer]:
            x = blk(x, rope, mask, cond)
        blk = self.blocks[layer]
        return blk.attn.scores(blk.norm1(x, cond), rope)

    # ------------------------------------------------------------------ protocol
    def encode_cells(self, batch: dict) -> ModelOutput:
        """Token states and their mean (the cell embedding) without the vocabulary head."""
        states, padding = self.hidden_states(batch)  # (B, T, D)
        return ModelOutput(cell=mean_pool(states, ~padding), token_states=states, token_mask=~padding)

    def forward(self, batch: dict) -> ModelOutput:
        """Per-position logits over all ``G`` genes and the last real position's logits."""
        out = self.encode_cells(batch)
        logits = self.head(out.token_states)  # (B, T, G)
        last = (out.token_mask.long().sum(1) - 1).clamp_min(0)  # (B,) sequences are left-aligned
        out.gene_logits = logits.gather(1, last[:, None, None].expand(-1, 1, logits.shape[-1])).squeeze(1)  # (B, G)
        out.token_outputs["gene_logits"] = logits
        return out

    def gene_tables(self) -> dict[str, torch.Tensor]:
        """``encoder``: the learned input gene tokens; ``decoder``: rows of the output head
        (the per-gene logit weights), both ``(G, D)``."""
        return {"encoder": self.gene.weight[N_SPECIAL_TOKENS:], "decoder": self.head.weight}


__all__ = ["GPLAR", "GPLARConfig", "PRESETS"]
