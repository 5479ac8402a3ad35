"""Gene vocabulary: gene symbols <-> token ids, with special tokens (SPEC §2).

Token ids ``0..3`` are the special tokens ``<pad>, <cls>, <mask>, <pert>``; gene ``i`` of the
vocabulary (its *gene index*, used for ``(B, G)`` tensors) has token id ``N_SPECIAL + i``.
Symbols are expected to be HGNC-harmonised already (:func:`tfmkit.data.hgnc.harmonize_genes`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError


class GeneVocab:
    """Ordered, unique gene symbols mapped to token ids.

    Parameters
    ----------
    genes
        Gene symbols; must be unique (duplicates raise :class:`TfmkitError`).
    """

    PAD = 0
    CLS = 1
    MASK = 2
    PERT = 3
    N_SPECIAL = 4
    SPECIAL_TOKENS = ("<pad>", "<cls>", "<mask>", "<pert>")

    def __init__(self, genes: Sequence[str]):
        genes = [str(g) for g in genes]
        index = pd.Index(genes)
        if index.has_duplicates:
            dup = index[index.duplicated()].unique()[:5].tolist()
            raise TfmkitError(
                f"gene vocabulary has duplicate symbols (e.g. {dup}); harmonise genes first "
                f"(tfmkit.data.hgnc.harmonize_genes) so every symbol appears once."
            )
        bad = sorted(set(genes) & set(self.SPECIAL_TOKENS))
        if bad:
            raise TfmkitError(f"gene symbols {bad} clash with special tokens; rename those genes.")
        self.genes = genes
        self._index = index

    @property
    def n_genes(self) -> int:
        """Number of genes ``G``."""
        return len(self.genes)

    @property
    def n_tokens(self) -> int:
        """Number of token ids (special tokens + genes); the embedding table size."""
        return self.N_SPECIAL + len(self.genes)

    def __len__(self) -> int:
        return self.n_genes

    def __eq__(self, other) -> bool:
        return isinstance(other, GeneVocab) and self.genes == other.genes

    def __hash__(self):
        return hash(tuple(self.genes))

    def __contains__(self, name) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        head = ", ".join(self.genes[:3])
        return f"GeneVocab({self.n_genes} genes: {head}{', ...' if self.n_genes > 3 else ''})"

    def gene_index(self, names) -> np.ndarray:
        """Gene indices ``0..G-1`` of ``names`` (int64), ``-1`` for genes not in the vocabulary."""
        names = [names] if isinstance(names, str) else list(names)
        return self._index.get_indexer(pd.Index([str(n) for n in names])).astype(np.int64)

    def token_ids(self, names, *, allow_unknown: bool = False) -> np.ndarray:
        """Token ids (``N_SPECIAL + gene index``) of ``names``.

        Unknown genes raise :class:`TfmkitError`, unless ``allow_unknown=True`` in which case
        they get ``-1`` (never PAD: an unknown gene must not look like padding).
        """
        idx = self.gene_index(names)
        unknown = idx < 0
        if unknown.any() and not allow_unknown:
            names = [names] if isinstance(names, str) else list(names)
            ex = [str(n) for n, u in zip(names, unknown) if u][:5]
            raise TfmkitError(
                f"{int(unknown.sum())} gene(s) not in the vocabulary (e.g. {ex}); drop them or "
                f"pass allow_unknown=True."
            )
        return np.where(unknown, -1, idx + self.N_SPECIAL).astype(np.int64)

    def to_dict(self) -> dict:
        """JSON-serialisable representation."""
        return {"special_tokens": list(self.SPECIAL_TOKENS), "genes": list(self.genes)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "GeneVocab":
        """Inverse of :meth:`to_dict`."""
        if "genes" not in d:
            raise TfmkitError("vocabulary dict has no 'genes' entry; is this a tfmkit vocab file?")
        special = tuple(d.get("special_tokens", cls.SPECIAL_TOKENS))
        if special != cls.SPECIAL_TOKENS:
            raise TfmkitError(f"vocabulary special tokens {special} differ from {cls.SPECIAL_TOKENS}.")
        return cls(d["genes"])

    def save(self, path) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> "GeneVocab":
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise TfmkitError(f"vocabulary file {path} does not exist.")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise TfmkitError(f"vocabulary file {path} is not valid JSON ({err.msg}).") from err
        return cls.from_dict(d)

    @classmethod
    def from_adatas(cls, adatas, *, min_cells: int = 1) -> "GeneVocab":
        """Sorted union of genes that are nonzero in ``>= min_cells`` cells, summing the number
        of nonzero cells of each symbol across datasets (``adatas``: mapping or sequence)."""
        adatas = list(adatas.values()) if isinstance(adatas, Mapping) else list(adatas)
        if not adatas:
            raise TfmkitError("no datasets given to build a vocabulary from.")
        total: dict[str, int] = {}
        for a in adatas:
            X = a.X
            nz = np.asarray((X != 0).sum(axis=0)).ravel() if sp.issparse(X) else (np.asarray(X) != 0).sum(axis=0)
            for g, n in zip(a.var_names.astype(str), nz):
                total[g] = total.get(g, 0) + int(n)
        genes = sorted(g for g, n in total.items() if n >= min_cells)
        if not genes:
            raise TfmkitError(f"no gene is nonzero in >= {min_cells} cells; lower min_cells.")
        return cls(genes)
