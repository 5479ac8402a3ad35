"""Gene-relationship databases for the perturbation benchmark (recall task and simulator).

A thin loader: ``relationship_databases(names)`` -> ``{database: {set name: [gene symbols]}}``.
Databases: ``corum`` (CORUM protein complexes; CC-BY-NC, non-commercial use only), ``hallmark``
(MSigDB Hallmark, CC-BY 4.0), ``reactome`` (the ``REACTOME_`` sets of MSigDB C2 canonical
pathways, CC-BY 4.0). Files are looked up in the package (``tfmkit/datasets/files/gene_sets``),
then in ``$TFMKIT_GENE_SETS``, then in the development tree's ``../shared/data/gene_sets``; when
``tfmkit.evaluation.genesets`` provides ``load_gene_sets(name)`` it is used instead.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import pandas as pd

from tfmkit.errors import TfmkitError

DATABASES = ("corum", "hallmark", "reactome")
_FILES = {"corum": "corum_complexes.csv", "hallmark": "h.all.v7.5.1.symbols.gmt",
          "reactome": "c2.cp.v7.5.1.nokegg.symbols.gmt"}


def _candidate_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2] / "datasets" / "files" / "gene_sets"]
    if os.environ.get("TFMKIT_GENE_SETS"):
        dirs.append(Path(os.environ["TFMKIT_GENE_SETS"]))
    dirs.append(Path(__file__).resolve().parents[5] / "shared" / "data" / "gene_sets")
    return dirs


def _open(fname: str):
    for d in _candidate_dirs():
        for cand in (d / fname, d / (fname + ".gz")):
            if cand.exists():
                return gzip.open(cand, "rt") if cand.suffix == ".gz" else open(cand)
    raise TfmkitError(f"gene-set file {fname} not found in {[str(d) for d in _candidate_dirs()]}; "
                      "set TFMKIT_GENE_SETS to a folder that holds it")


def _read_gmt(fname: str, prefix: str | None = None) -> dict[str, list[str]]:
    out = {}
    with _open(fname) as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) > 2 and (prefix is None or parts[0].startswith(prefix)):
                out[parts[0]] = [g for g in parts[2:] if g]
    return out


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, tuple[str, ...]]:
    try:  # the shared loader, when another module provides it
        from tfmkit.evaluation import genesets  # type: ignore[attr-defined]

        if hasattr(genesets, "load_gene_sets"):
            return {k: tuple(v) for k, v in genesets.load_gene_sets(name).items()}
    except (ImportError, TfmkitError, KeyError, ValueError):
        pass
    if name == "corum":
        with _open(_FILES["corum"]) as fh:
            df = pd.read_csv(fh)
        return {f"{r.ID}:{r.Name}": tuple(str(r.Genes).split(";")) for r in df.itertuples()}
    if name == "hallmark":
        return {k: tuple(v) for k, v in _read_gmt(_FILES["hallmark"]).items()}
    if name == "reactome":
        return {k: tuple(v) for k, v in _read_gmt(_FILES["reactome"], prefix="REACTOME_").items()}
    raise TfmkitError(f"unknown gene-relationship database {name!r}; use one of {list(DATABASES)}")


def relationship_databases(names=DATABASES, *, min_size: int = 2, max_size: int | None = 300
                           ) -> dict[str, dict[str, list[str]]]:
    """``{database: {set: genes}}`` keeping sets with ``min_size <= |set| <= max_size`` (huge
    pathways would make every pair of genes "related")."""
    out = {}
    for name in names:
        sets = _load(str(name).lower())
        out[name] = {k: list(v) for k, v in sets.items()
                     if len(v) >= min_size and (max_size is None or len(v) <= max_size)}
    return out
