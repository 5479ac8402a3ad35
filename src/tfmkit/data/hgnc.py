"""HGNC gene-symbol harmonisation (SPEC §2).

A compact copy of the HGNC table (approved symbols only; columns: approved symbol, alias
symbols, previous symbols, Ensembl gene id, locus type; HGNC data are CC0) ships gzip'd in
``tfmkit/datasets/files/hgnc_compact.tsv.gz`` (built by ``scripts/build_bundled_data.py``).

:func:`harmonize_genes` renames ``var_names`` to approved symbols with the priority

    exact approved symbol > Ensembl id > previous symbol > alias symbol,

where previous/alias symbols are used only when they point to exactly one approved symbol.
Ensembl ids are accepted with or without a version suffix (``ENSG00000198851.7``) in
``var_names`` or an Ensembl-id column of ``var`` (:data:`ENSEMBL_COLUMNS`).
Unmapped genes keep their name (reported, never dropped).

Collisions (several columns landing on one symbol, e.g. ``SEPT7`` and ``SEPTIN7`` both present):
one column is kept, chosen by how it was named — ``approved > ensembl > previous > alias``, the
first in file order on a tie — so a column already named by the approved symbol always wins
over one renamed to it. The others are dropped, never summed: summing would double-count files
that store the same gene twice (e.g. a merged reference), and a kept column is always one the
user's file really had. Collisions are printed on stderr (one line per call, always shown) and
recorded in ``uns``.
"""

from __future__ import annotations

import dataclasses
import gzip
import sys
import warnings
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

HGNC_FILE = "hgnc_compact.tsv.gz"
STATUSES = ("approved", "ensembl", "previous", "alias", "unmapped", "duplicate_dropped")
GENE_REPORT_KEY = "tfmkit_gene_report"
# Which of several columns landing on one symbol is kept (lower wins; ties -> first).
KEEP_PRIORITY = {"approved": 0, "ensembl": 1, "previous": 2, "alias": 3, "unmapped": 4}
# ``var`` columns read for Ensembl ids (the first present is used): Cell Ranger / scanpy,
# GEO / CELLxGENE-style exports.
ENSEMBL_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ensembl_gene_id", "feature_id")


@dataclasses.dataclass(frozen=True)
class HGNCTable:
    """Lookup tables built from the bundled HGNC file.

    Attributes: ``table`` (DataFrame: symbol, alias, previous, ensembl, locus_type),
    ``approved`` (set of approved symbols), ``ensembl`` (Ensembl id -> symbol), ``previous`` /
    ``alias`` (old symbol -> tuple of approved symbols it may denote).
    """

    table: pd.DataFrame
    approved: frozenset
    ensembl: dict
    previous: dict
    alias: dict

    def locus_type(self, symbols) -> np.ndarray:
        """Locus type per symbol (e.g. ``"gene with protein product"``), ``""`` if unknown."""
        lt = dict(zip(self.table["symbol"], self.table["locus_type"]))
        return np.array([lt.get(s, "") for s in symbols], dtype=object)

    def protein_coding(self) -> set:
        """Approved symbols whose locus type is ``gene with protein product``."""
        t = self.table
        return set(t.loc[t["locus_type"] == "gene with protein product", "symbol"])


def _multimap(symbols: pd.Series, lists: pd.Series) -> dict:
    out: dict[str, list[str]] = {}
    for sym, val in zip(symbols, lists):
        if not val:
            continue
        for old in val.split("|"):
            out.setdefault(old, [])
            if sym not in out[old]:
                out[old].append(sym)
    return {k: tuple(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def load_hgnc() -> HGNCTable:
    """Load (once per process) the bundled compact HGNC table."""
    ref = resources.files("tfmkit.datasets").joinpath("files", HGNC_FILE)
    with resources.as_file(ref) as path, gzip.open(path, "rt") as fh:
        table = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    ensembl = {e: s for s, e in zip(table["symbol"], table["ensembl"]) if e}
    return HGNCTable(
        table=table,
        approved=frozenset(table["symbol"]),
        ensembl=ensembl,
        previous=_multimap(table["symbol"], table["previous"]),
        alias=_multimap(table["symbol"], table["alias"]),
    )


@dataclasses.dataclass
class GeneReport:
    """Outcome of :func:`harmonize_genes`: number of genes per status, examples of unmapped and
    dropped-duplicate genes (first 10 each), and the number of genes before/after."""

    n_input: int
    n_output: int
    counts: dict
    unmapped_examples: list
    duplicate_examples: list
    adata: object = dataclasses.field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        """One-line human-readable summary."""
        parts = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES)
        ex = f" (unmapped e.g. {', '.join(self.unmapped_examples[:5])})" if self.unmapped_examples else ""
        return f"{self.n_input} genes -> {self.n_output} kept: {parts}{ex}"

    def to_dict(self) -> dict:
        """Plain-dict version (stored in ``adata.uns['tfmkit_gene_report']``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "adata"}


def _strip_version(ens: str) -> str:
    """``ENSG00000198851.7`` / ``ENSG00000182378.14_PAR_Y`` -> ``ENSG00000198851`` /
    ``ENSG00000182378`` (human Ensembl ids only; anything else unchanged)."""
    return ens.split(".", 1)[0].split("_", 1)[0] if ens.startswith("ENSG") else ens


def collision_keep_mask(new, status) -> np.ndarray:
    """Boolean mask of the columns :func:`harmonize_genes` keeps when several map to one
    symbol (``new``, ``status`` from :func:`map_symbols`; rule in the module doc)."""
    new, status = np.asarray(new, dtype=object), np.asarray(status, dtype=object)
    rank = np.array([KEEP_PRIORITY.get(s, 9) for s in status])
    order = np.lexsort((np.arange(len(new)), rank))  # by rank, then file position
    keep = np.zeros(len(new), dtype=bool)
    keep[order[~pd.Index(new[order]).duplicated(keep="first")]] = True
    return keep


def _collision_line(source, original, new, keep) -> str:
    """One stderr line describing the dropped duplicate columns."""
    kept_by_symbol = {n: o for n, o, k in zip(new, original, keep) if k}
    drop = np.flatnonzero(~keep)
    ex = ", ".join(f"{original[i]} (kept {kept_by_symbol[new[i]]} as {new[i]})" for i in drop[:3])
    where = f"{source}: " if source else ""
    return (f"warning: {where}{len(drop)} of {len(original)} gene columns map to a symbol another "
            f"column already has and were dropped, not summed (e.g. {ex}); the kept column is "
            f"the one already named by the approved symbol, else the first.")


def map_symbols(names, ensembl_ids=None, *, table: HGNCTable | None = None):
    """Map gene names (and optional Ensembl ids) to HGNC approved symbols.

    Returns ``(new_names, status)`` arrays; status is one of ``approved, ensembl, previous,
    alias, unmapped`` (no duplicate handling here). Pure function used by
    :func:`harmonize_genes`.
    """
    t = table or load_hgnc()
    names = [str(n) for n in names]
    ens = [None] * len(names) if ensembl_ids is None else [None if e is None else str(e) for e in ensembl_ids]
    new, status = [], []
    for name, eid in zip(names, ens):
        if name in t.approved:
            new.append(name), status.append("approved")
            continue
        hit = None
        for cand in (name, eid):
            if cand and cand.startswith("ENSG"):
                hit = t.ensembl.get(_strip_version(cand))
                if hit:
                    break
        if hit:
            new.append(hit), status.append("ensembl")
            continue
        prev = t.previous.get(name, ())
        if len(prev) == 1:
            new.append(prev[0]), status.append("previous")
            continue
        alias = t.alias.get(name, ())
        if len(alias) == 1 and not prev:
            new.append(alias[0]), status.append("alias")
            continue
        new.append(name), status.append("unmapped")
    return np.array(new, dtype=object), np.array(status, dtype=object)


def ensembl_column(var: pd.DataFrame):
    """Ensembl ids from the first of :data:`ENSEMBL_COLUMNS` present in ``var``, else ``None``."""
    for col in ENSEMBL_COLUMNS:
        if col in var:
            return var[col].astype(str).to_numpy()
    return None


def harmonize_genes(adata, *, copy: bool = False, source: str | None = None) -> GeneReport:
    """Rename ``adata.var_names`` to HGNC approved symbols and drop duplicate columns.

    Ensembl ids are read from ``var_names`` or the first of ``var[c]`` for ``c`` in
    :data:`ENSEMBL_COLUMNS` (values starting with ``ENSG``; version suffixes ignored). When
    several columns map to the same symbol one is kept — the one whose name already was the
    approved symbol, else by status ``ensembl > previous > alias``, else the first — and the
    others are removed (status ``duplicate_dropped``; counts are never summed; see the module
    doc). Collisions are printed as one ``warning:`` line on stderr naming ``source`` (e.g. the
    file name). Unmapped genes keep their original name.

    Keys written: ``.var['original_symbol']``, ``.var['hgnc_status']``,
    ``.uns['tfmkit_gene_report']`` (dict of the returned report).

    Returns
    -------
    :class:`GeneReport`. With ``copy=True`` the harmonised AnnData is attached as
    ``report.adata`` (the input is not modified); otherwise ``adata`` is modified in place
    (columns may be removed, which AnnData does by replacing its internal arrays).
    """
    if adata.n_vars == 0:
        raise TfmkitError("the AnnData has no genes; nothing to harmonise.")
    ens = ensembl_column(adata.var)
    original = adata.var_names.astype(str).to_numpy()
    new, status = map_symbols(original, ens)
    keep = collision_keep_mask(new, status)
    dup = ~keep
    status = status.copy()
    status[dup] = "duplicate_dropped"
    counts = {s: int((status == s).sum()) for s in STATUSES}
    report = GeneReport(
        n_input=int(len(original)),
        n_output=int(keep.sum()),
        counts=counts,
        unmapped_examples=[str(x) for x in original[status == "unmapped"][:10]],
        duplicate_examples=[f"{o}->{n}" for o, n in zip(original[dup][:10], new[dup][:10])],
    )
    if dup.any():
        print(_collision_line(source, original, new, keep), file=sys.stderr)
    target = adata.copy() if copy else adata
    target.var["original_symbol"] = original
    target.var["hgnc_status"] = status
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*names are not unique.*")
        target.var_names = pd.Index(new.astype(str))
    if dup.any():
        target._inplace_subset_var(np.flatnonzero(keep))
    target.uns[GENE_REPORT_KEY] = report.to_dict()
    if copy:
        report.adata = target
    return report
