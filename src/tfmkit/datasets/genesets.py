"""Loaders for the gene-relationship databases shipped with tfmkit (licences in
``tfmkit/datasets/GENE_SETS_LICENSE.md``).

``load_gene_sets(name) -> {set name: [HGNC symbols]}`` with ``name`` one of:

- ``corum`` — CORUM human protein complexes (**CC BY-NC: non-commercial use only**);
- ``hallmark`` — MSigDB Hallmark v7.5.1 (CC BY 4.0);
- ``canonical_pathways`` — MSigDB C2 canonical pathways v7.5.1 without KEGG (CC BY 4.0);
- ``reactome`` — the ``REACTOME_`` subset of ``canonical_pathways``.

``read_gmt(path)`` reads any user GMT file (plain or ``.gz``), so users can benchmark against
their own databases.
"""

from __future__ import annotations

import csv
import gzip
from functools import lru_cache
from pathlib import Path

from tfmkit.errors import TfmkitError

GENE_SET_DIR = Path(__file__).resolve().parent / "files" / "gene_sets"
DATABASES = ("corum", "hallmark", "canonical_pathways", "reactome")
_FILES = {
    "corum": "corum_complexes.csv",
    "hallmark": "h.all.v7.5.1.symbols.gmt",
    "canonical_pathways": "c2.cp.v7.5.1.nokegg.symbols.gmt.gz",
    "reactome": "c2.cp.v7.5.1.nokegg.symbols.gmt.gz",
}
LICENSES = {
    "corum": "CC BY-NC 4.0 (non-commercial use only)",
    "hallmark": "CC BY 4.0 (MSigDB)",
    "canonical_pathways": "CC BY 4.0 (MSigDB)",
    "reactome": "CC BY 4.0 (MSigDB / Reactome)",
}


def _open_text(path: Path):
    if not path.exists():
        raise TfmkitError(f"gene-set file {path} does not exist; reinstall tfmkit or pass an "
                          "existing GMT file")
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_gmt(path, *, prefix: str | None = None) -> dict[str, list[str]]:
    """``{set name: genes}`` from a GMT file (name, description, genes… tab-separated);
    ``prefix`` keeps only sets whose name starts with it. Empty gene fields are dropped."""
    out: dict[str, list[str]] = {}
    with _open_text(Path(path)) as fh:
        for line in fh:
            parts = line.rstrip("\n\r").split("\t")
            if len(parts) < 3 or (prefix is not None and not parts[0].startswith(prefix)):
                continue
            out[parts[0]] = [g for g in parts[2:] if g]
    return out


def read_corum(path) -> dict[str, list[str]]:
    """``{"<ID>:<Name>": genes}`` from a CORUM table with ``ID``, ``Name``, ``Genes``
    (``;``-separated) columns."""
    out: dict[str, list[str]] = {}
    with _open_text(Path(path)) as fh:
        for row in csv.DictReader(fh):
            genes = [g.strip() for g in str(row["Genes"]).split(";") if g.strip()]
            out[f"{row['ID']}:{row['Name']}"] = genes
    return out


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    path = GENE_SET_DIR / _FILES[name]
    if name == "corum":
        sets = read_corum(path)
    else:
        sets = read_gmt(path, prefix="REACTOME_" if name == "reactome" else None)
    return tuple((k, tuple(v)) for k, v in sets.items())


def load_gene_sets(name: str) -> dict[str, list[str]]:
    """The shipped database ``name`` (see module doc) as ``{set name: [gene symbols]}``."""
    key = str(name).lower()
    if key not in _FILES:
        raise TfmkitError(f"unknown gene-set database {name!r}; use one of {', '.join(DATABASES)}")
    return {k: list(v) for k, v in _load(key)}


def load_databases(names=("corum", "hallmark", "canonical_pathways"), *, min_size: int = 2,
                   max_size: int | None = 300) -> dict[str, dict[str, list[str]]]:
    """``{database: {set: genes}}`` keeping sets with ``min_size ≤ |set| ≤ max_size`` (very
    large pathways would make almost every gene pair "related"); names are case-insensitive."""
    names = tuple(str(n).lower() for n in names)
    return {n: {k: v for k, v in load_gene_sets(n).items()
                if len(v) >= min_size and (max_size is None or len(v) <= max_size)}
            for n in names}
