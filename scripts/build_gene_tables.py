#!/usr/bin/env python
"""Regenerate the gene-level biology tables of ``src/tfmkit/datasets/files/gene_sets/``
(GRN AUROC and gene-annotation LDA of ``tfmkit benchmark genes``; GPL paper §2.3, Suppl. F-G).

Inputs are two files fetched with the ordinary package clients (nothing else is downloaded)::

    pip download --no-deps --no-binary :all: pyenrichr==1.0.2     # pyenrichr-1.0.2.tar.gz
    apt-get download r-bioc-org.hs.eg.db                           # Debian bookworm 3.16.0-1

    python scripts/build_gene_tables.py --pyenrichr pyenrichr-1.0.2.tar.gz \\
        --orghs r-bioc-org.hs.eg.db_3.16.0-1_all.deb

Writes (gzip, deterministic row order; symbols mapped to current HGNC approved symbols with
:func:`tfmkit.data.hgnc.map_symbols`, unmapped names kept as given):

* ``chea2022_human.tsv.gz`` — ChEA 2022 (Enrichr library in the pyenrichr sdist), the sets
  whose name ends in ``Human``, merged per TF: ``tf``, ``n_experiments``, ``pmids``
  (``|``-separated), ``targets`` (``|``-separated, union over the TF's experiments).
* ``tf_roles.tsv.gz`` — ``tf``, ``role`` for every TF of the ChEA table with a GO molecular
  function of activator / repressor kind (org.Hs.eg.db ``go_mf_all``: annotated to the term or
  a descendant, evidence other than IEA/ND): ``activator`` (GO:0001216 / GO:0001228 only),
  ``repressor`` (GO:0001217 / GO:0001227 only) or ``dual`` (both).
* ``go_cc_compartments.tsv.gz`` — ``gene``, ``go_id``, ``compartment``: genes annotated
  (``go_cc_all``, evidence other than IEA/ND) to exactly one of :data:`COMPARTMENTS`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sqlite3
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "tfmkit" / "datasets" / "files" / "gene_sets"
#: Major GO cellular-component terms used as one-label-per-gene compartments (none is a
#: descendant of another). The names are checked against marker genes below.
COMPARTMENTS = {
    "GO:0005634": "nucleus",
    "GO:0005739": "mitochondrion",
    "GO:0005886": "plasma membrane",
    "GO:0005576": "extracellular region",
    "GO:0005783": "endoplasmic reticulum",
    "GO:0005794": "Golgi apparatus",
    "GO:0005764": "lysosome",
    "GO:0005768": "endosome",
    "GO:0005777": "peroxisome",
    "GO:0005856": "cytoskeleton",
    "GO:0005829": "cytosol",
}
MARKERS = {"GO:0005739": ["NDUFA9", "COX4I1"], "GO:0005634": ["HNRNPA1", "POLR2A"],
           "GO:0005886": ["CD4", "EGFR"], "GO:0005783": ["CANX", "CALR"],
           "GO:0005794": ["GOLGA2", "GOLGB1"], "GO:0005764": ["LAMP1", "CTSD"],
           "GO:0005777": ["PEX14", "CAT"], "GO:0005576": ["ALB", "IL6"],
           "GO:0005856": ["ACTB", "TUBB"], "GO:0005829": ["GAPDH", "PKM"], "GO:0005768": ["EEA1", "RAB5A"]}
#: DNA-binding transcription activator / repressor activity (and their RNA polymerase II-specific children)
ACTIVATOR, REPRESSOR = ("GO:0001216", "GO:0001228"), ("GO:0001217", "GO:0001227")
ROLE_MARKERS = {"REST": "repressor", "ZEB1": "repressor", "ATF4": "activator"}
SKIP_EVIDENCE = ("IEA", "ND")


def _hgnc(names):
    from tfmkit.data.hgnc import map_symbols

    new, _ = map_symbols(list(names))
    return [str(x) for x in new]


def read_chea(sdist: Path) -> dict[str, dict]:
    """``{tf: {"pmids": set, "targets": set, "n": int}}`` of the Human ChEA 2022 sets."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("pyenrichr/data/ChEA_2022"))
        text = tar.extractfile(member).read().decode("utf-8")
    out: dict[str, dict] = defaultdict(lambda: {"pmids": set(), "targets": set(), "n": 0})
    rows = [line.rstrip("\n").split("\t") for line in text.splitlines() if line.strip()]
    rows = [r for r in rows if r[0].split()[-1] == "Human"]
    tfs = _hgnc([r[0].split()[0].upper() for r in rows])
    all_targets = sorted({g for r in rows for g in r[2:] if g})
    mapped = dict(zip(all_targets, _hgnc(all_targets)))
    for tf, r in zip(tfs, rows):
        e = out[tf]
        e["n"] += 1
        e["pmids"].add(r[0].split()[1])
        e["targets"].update(mapped[g] for g in r[2:] if g)
    return dict(out)


def open_orghs(path: Path, tmp: Path) -> sqlite3.Connection:
    """The org.Hs.eg.db sqlite of a ``.deb`` (unpacked with ``dpkg-deb -x``) or a ``.sqlite``."""
    if path.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(path), str(tmp)], check=True)
        path = next(tmp.rglob("org.Hs.eg.sqlite"))
    return sqlite3.connect(path)


def go_genes(con: sqlite3.Connection, table: str, go_ids) -> dict[str, set[str]]:
    """``{go_id: {symbol}}`` of ``go_cc_all`` / ``go_mf_all`` without IEA/ND evidence."""
    marks = ",".join("?" * len(go_ids))
    skip = ",".join("?" * len(SKIP_EVIDENCE))
    q = (f"select distinct g.go_id, i.symbol from {table} g join gene_info i on g._id = i._id "
         f"where g.go_id in ({marks}) and g.evidence not in ({skip})")
    rows = con.execute(q, list(go_ids) + list(SKIP_EVIDENCE)).fetchall()
    syms = sorted({s for _, s in rows})
    mapped = dict(zip(syms, _hgnc(syms)))
    out: dict[str, set[str]] = defaultdict(set)
    for go, s in rows:
        out[go].add(mapped[s])
    return out


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    buf.write("\t".join(header) + "\n")
    for r in rows:
        buf.write("\t".join(r) + "\n")
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(rows)} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyenrichr", type=Path, required=True, help="pyenrichr-1.0.2.tar.gz")
    ap.add_argument("--orghs", type=Path, required=True, help="r-bioc-org.hs.eg.db .deb or org.Hs.eg.sqlite")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    chea = read_chea(args.pyenrichr)
    _write(args.out / "chea2022_human.tsv.gz", ["tf", "n_experiments", "pmids", "targets"],
           [[tf, str(e["n"]), "|".join(sorted(e["pmids"])), "|".join(sorted(e["targets"]))]
            for tf, e in sorted(chea.items())])

    with tempfile.TemporaryDirectory() as tmp:
        con = open_orghs(args.orghs, Path(tmp))
        mf = go_genes(con, "go_mf_all", list(ACTIVATOR + REPRESSOR))
        roles_go = {k: set().union(*(mf[g] for g in ids)) for k, ids in (("act", ACTIVATOR), ("rep", REPRESSOR))}
        cc = go_genes(con, "go_cc_all", list(COMPARTMENTS))
    roles = []
    for tf in sorted(chea):
        act, rep = tf in roles_go["act"], tf in roles_go["rep"]
        if act or rep:
            roles.append([tf, "dual" if act and rep else ("activator" if act else "repressor")])
    for tf, want in ROLE_MARKERS.items():
        assert tf in roles_go["rep" if want == "repressor" else "act"], (tf, want)
    _write(args.out / "tf_roles.tsv.gz", ["tf", "role"], roles)

    for go, genes in MARKERS.items():
        assert all(g in cc[go] for g in genes), (go, COMPARTMENTS[go], [g for g in genes if g not in cc[go]])
    labels: dict[str, list[str]] = defaultdict(list)
    for go, genes in cc.items():
        for g in genes:
            labels[g].append(go)
    rows = [[g, gos[0], COMPARTMENTS[gos[0]]] for g, gos in sorted(labels.items()) if len(gos) == 1]
    _write(args.out / "go_cc_compartments.tsv.gz", ["gene", "go_id", "compartment"], rows)


if __name__ == "__main__":
    main()
