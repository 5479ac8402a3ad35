"""The ``pretrained`` gene encoder (SPEC §3; encodings paper; BMFM partial coverage): a user
table gene -> vector, projected by an MLP, with learned rows for genes the table lacks.

Registered in :data:`tfmkit.encoders.GENE_ENCODERS` (imported by :mod:`tfmkit.encoders`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tfmkit.encoders import GENE_ENCODERS, LearnedGeneEncoder
from tfmkit.errors import TfmkitError

log = logging.getLogger("tfmkit")


def load_gene_table(path: str | Path):
    """Read a gene -> vector table (CSV, TSV or parquet; first column = gene identifier).

    Returns a ``pandas.DataFrame`` indexed by gene with float columns. Raises
    :class:`TfmkitError` for a missing file, an unknown format, non-numeric or non-finite
    values, or duplicate gene identifiers.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TfmkitError(
            f"gene table {str(path)!r} does not exist; "
            "pass table_path= an existing CSV/TSV/parquet file"
        )
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet") or name.endswith(".pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError:
            raise TfmkitError(
                "reading parquet gene tables needs pyarrow; "
                "`pip install pyarrow` or save the table as CSV/TSV"
            ) from None
        if isinstance(df.index, pd.RangeIndex):
            df = df.set_index(df.columns[0])
    elif name.endswith((".csv", ".tsv", ".txt", ".tab")):
        df = pd.read_csv(path, sep="," if name.endswith(".csv") else "\t", index_col=0)
    else:
        raise TfmkitError(
            f"unknown gene table format {path.name!r}; "
            "use .csv, .tsv or .parquet (first column = gene)"
        )
    return _check_gene_table(df, str(path))


def _check_gene_table(df, where: str):
    """Validate a gene table DataFrame (numeric, finite, unique gene index) -> float32 frame."""
    import pandas as pd

    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric or df.shape[1] == 0:
        raise TfmkitError(
            f"gene table {where} must have one gene column then numeric columns; "
            f"non-numeric: {non_numeric[:5]}"
        )
    df = df.astype(np.float32)
    if not np.isfinite(df.to_numpy()).all():
        raise TfmkitError(
            f"gene table {where} contains NaN or infinite values; fill or drop those rows"
        )
    index = df.index.astype(str)
    dup = index[index.duplicated()].unique()
    if len(dup):
        raise TfmkitError(
            f"gene table {where} has {len(dup)} duplicated genes (e.g. {list(dup[:3])}); "
            "keep one row per gene"
        )
    df.index = index
    return df


@GENE_ENCODERS.register("pretrained")
class PretrainedGeneEncoder(nn.Module):
    """External gene vectors through an MLP, learned rows where the table has no entry.

    Encodings paper §3.2 (ESM-2 encoding: ``MLP(E(g))``) with BMFM's partial coverage (§2.2.6):
    vocabulary genes found in the table use ``MLP(table[g])``; the others (and special tokens)
    use a learned embedding row. The table is a frozen buffer, saved with the model.

    Parameters
    ----------
    n_tokens, dim
        Vocabulary size (special tokens included) and output width.
    table_path
        CSV/TSV/parquet file, first column = gene identifier, other columns = the vector.
    vocab_genes
        Vocabulary gene identifiers in token order; token id = ``n_special + index``.
    n_special
        Number of special tokens before the genes (PAD, CLS, MASK, PERT).
    table
        Alternatively a ``pandas.DataFrame`` (index = gene) instead of ``table_path``.
    table_dim
        Width of the table when rebuilding from a checkpoint without the file (the buffer is
        then filled by ``load_state_dict``).
    hidden_dim
        MLP hidden width (default ``dim``).
    padding_idx
        Token id of PAD (a zero learned row), or ``None``.

    Attributes
    ----------
    coverage
        ``dict(n_genes, n_covered, fraction, missing_examples)`` (also logged at INFO level).
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        table_path: str | None = None,
        vocab_genes: list[str] | None = None,
        n_special: int = 4,
        table=None,
        table_dim: int | None = None,
        hidden_dim: int | None = None,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        if table_path is not None or table is not None:
            df = (
                load_gene_table(table_path)
                if table is None
                else _check_gene_table(table, "(DataFrame)")
            )
            if vocab_genes is None:
                raise TfmkitError(
                    "the 'pretrained' gene encoder needs vocab_genes "
                    "(the vocabulary gene list in token order)"
                )
            vocab_genes = [str(g) for g in vocab_genes]
            if n_special + len(vocab_genes) > n_tokens:
                raise TfmkitError(
                    f"n_special + len(vocab_genes) = {n_special + len(vocab_genes)} exceeds "
                    f"n_tokens = {n_tokens}; pass the model's vocabulary"
                )
            vectors, covered, missing = self._match(df, vocab_genes, n_tokens, n_special)
            if not covered.any():
                raise TfmkitError(
                    f"none of the {len(vocab_genes)} vocabulary genes is in the gene table "
                    f"(table ids look like {list(df.index[:3])}, vocabulary like "
                    f"{vocab_genes[:3]}); use the same identifier type (symbols vs Ensembl)"
                )
            n_cov = int(covered.sum())
            self.coverage = dict(
                n_genes=len(vocab_genes),
                n_covered=n_cov,
                fraction=n_cov / max(len(vocab_genes), 1),
                missing_examples=missing[:5],
            )
            log.info(
                "pretrained gene table covers %d/%d vocabulary genes (%.1f%%); missing e.g. %s",
                n_cov,
                len(vocab_genes),
                100 * self.coverage["fraction"],
                missing[:5],
            )
        elif table_dim is not None:
            vectors = torch.zeros(n_tokens, int(table_dim))
            covered = torch.zeros(n_tokens, dtype=torch.bool)
            self.coverage = None  # restored from the state dict
        else:
            raise TfmkitError(
                "the 'pretrained' gene encoder needs table_path= "
                "(CSV/TSV/parquet gene -> vector table)"
            )
        self.register_buffer("table", vectors)  # (n_tokens, p) zero rows where not covered
        self.register_buffer("covered", covered)  # (n_tokens,) bool
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(
            nn.Linear(vectors.shape[1], hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.fallback = LearnedGeneEncoder(n_tokens, dim, padding_idx=padding_idx)

    @staticmethod
    def _match(df, vocab_genes: list[str], n_tokens: int, n_special: int):
        """Rows of ``df`` for each vocabulary gene: exact id, then case-insensitive."""
        exact = {g: i for i, g in enumerate(df.index)}
        upper: dict[str, int] = {}
        for i, g in enumerate(df.index):
            upper.setdefault(g.upper(), i)
        values = df.to_numpy()
        vectors = torch.zeros(n_tokens, values.shape[1])
        covered = torch.zeros(n_tokens, dtype=torch.bool)
        rows, toks, missing = [], [], []
        for j, g in enumerate(vocab_genes):
            i = exact.get(g, upper.get(g.upper()))
            if i is None:
                missing.append(g)
            else:
                rows.append(i)
                toks.append(n_special + j)
        if rows:
            vectors[toks] = torch.from_numpy(values[rows])
            covered[toks] = True
        return vectors, covered, missing

    def forward(self, gene_ids: torch.Tensor) -> torch.Tensor:
        learned = self.fallback(gene_ids)  # (B, K, dim)
        pre = self.mlp(self.table[gene_ids])  # (B, K, dim)
        return torch.where(self.covered[gene_ids].unsqueeze(-1), pre.to(learned.dtype), learned)

    def gene_table(self) -> torch.Tensor:
        """The ``(n_tokens, dim)`` effective per-token gene vectors."""
        return self.forward(torch.arange(self.table.shape[0], device=self.table.device))
