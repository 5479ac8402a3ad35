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


# ---- gene-level biology tables (GRN AUROC, annotation LDA; GPL §2.3, Suppl. F-G) -------------
#: TF -> target tables: name -> (file, licence). Built by ``scripts/build_gene_tables.py``.
TF_TARGET_TABLES = {"chea2022": ("chea2022_human.tsv.gz",
                                 "ChEA 2022 via Enrichr / pyenrichr: CC BY-NC-SA 4.0 (non-commercial use only)")}
#: One-label-per-gene annotations: name -> (file, label column, licence).
GENE_ANNOTATIONS = {"go_cc": ("go_cc_compartments.tsv.gz", "compartment",
                              "GO annotations via org.Hs.eg.db 3.16.0 (Artistic-2.0; GO data CC BY 4.0)")}
TF_ROLES_FILE = "tf_roles.tsv.gz"
TF_ROLES = ("activator", "repressor", "dual")


@lru_cache(maxsize=None)
def _table(filename: str):
    import pandas as pd

    path = GENE_SET_DIR / filename
    if not path.exists():
        raise TfmkitError(f"gene table {path} does not exist; reinstall tfmkit or rebuild it with "
                          "scripts/build_gene_tables.py")
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def load_tf_targets(name: str = "chea2022") -> dict[str, list[str]]:
    """``{TF symbol: [target symbols]}`` of a shipped TF -> target table (``chea2022``: ChEA
    2022 human ChIP-seq/ChIP-chip sets merged per TF, 174 TFs; **non-commercial**)."""
    if name not in TF_TARGET_TABLES:
        raise TfmkitError(f"unknown TF-target table {name!r}; use one of {', '.join(TF_TARGET_TABLES)}")
    df = _table(TF_TARGET_TABLES[name][0])
    return {r.tf: [g for g in r.targets.split("|") if g] for r in df.itertuples(index=False)}


def load_tf_roles() -> dict[str, str]:
    """``{TF symbol: activator | repressor | dual}`` from GO molecular function (shipped TFs
    with an activator / repressor DNA-binding annotation only; see ``DATA_NOTES.md``)."""
    df = _table(TF_ROLES_FILE)
    return dict(zip(df["tf"], df["role"]))


def load_gene_annotation(name: str = "go_cc"):
    """A one-label-per-gene annotation as a ``pandas.Series`` (index gene symbol, value label);
    ``go_cc``: genes annotated to exactly one of 11 major GO cellular-component terms."""
    import pandas as pd

    if name not in GENE_ANNOTATIONS:
        raise TfmkitError(f"unknown gene annotation {name!r}; use one of {', '.join(GENE_ANNOTATIONS)}")
    file, column, _ = GENE_ANNOTATIONS[name]
    df = _table(file)
    return pd.Series(df[column].to_numpy(), index=pd.Index(df["gene"], name="gene"), name=name)
