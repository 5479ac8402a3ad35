#!/usr/bin/env python
"""Regenerate the data files bundled in ``src/tfmkit/datasets/files/``.

Usage (from the repository root, with tfmkit installed editable)::

    python scripts/build_bundled_data.py [--shared ../shared/data]

Writes:

* ``hgnc_compact.tsv.gz`` — approved HGNC entries of ``gene_sets/hgnc_entries.tsv`` with the
  columns symbol, alias, previous, ensembl, locus_type (``|``-separated lists). CC0.
* ``liao2020_balf.npz`` — the three Liao 2020 BALF 10x ``.h5`` files, concatenated, genes
  harmonised to HGNC symbols, genes with zero counts in every cell removed, plus the
  marker-derived ``cell_type_derived`` labels (see ``derive_balf_cell_types``).
* ``wu2020.npz`` — ``wu2020/wu2020_200_v0_11.h5ad`` without the immune-receptor (``IR_*``)
  columns, genes harmonised, zero genes removed.
* ``pbmc68k.npz`` — scanpy's ``pbmc68k_reduced`` with raw counts recovered as
  ``round(expm1(raw.X) * n_counts / 1e4)`` (asserted integer to 1e-3 relative before rounding).

Deterministic: the same inputs and library versions give the same files.
"""

from __future__ import annotations

import argparse
import gzip
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "tfmkit" / "datasets" / "files"
BALF_FILES = {
    "C144": "GSM4339772_C144_filtered_feature_bc_matrix.h5",
    "C146": "GSM4339774_C146_filtered_feature_bc_matrix.h5",
    "C149": "GSM4475052_C149_filtered_feature_bc_matrix.h5",
}
# Canonical markers of the cell types expected in BALF (Liao et al. 2020 Fig. 1 markers plus
# standard immunology markers). Used only to derive coarse, documented-as-derived labels.
BALF_MARKERS = {
    "macrophage": ["CD68", "MARCO", "FABP4", "C1QA", "C1QB", "APOE"],
    "T cell": ["CD3E", "CD3D", "CD2", "TRAC"],
    "NK cell": ["KLRD1", "KLRF1", "NCAM1", "GNLY", "NKG7"],
    "B cell": ["MS4A1", "CD79A", "CD19", "BANK1"],
    "plasma cell": ["JCHAIN", "MZB1", "IGHG4", "IGHG1"],
    "epithelial": ["KRT18", "EPCAM", "KRT8", "KRT19", "TPPP3"],
    "neutrophil": ["FCGR3B", "CXCR2", "CSF3R"],
    "mDC": ["CD1C", "CLEC9A", "FCER1A", "CLEC10A"],
    "pDC": ["LILRA4", "CLEC4C"],  # not IL3RA: also on macrophages here
    "mast cell": ["TPSB2", "CPA3", "MS4A2"],
}


def build_hgnc(shared: Path) -> None:
    t = pd.read_csv(shared / "gene_sets" / "hgnc_entries.tsv", sep="\t", dtype=str, keep_default_na=False)
    t = t[t["Status"] == "Approved"]

    def lst(col):
        return t[col].map(lambda v: "|".join(x.strip() for x in v.split(",") if x.strip()))

    out = pd.DataFrame({
        "symbol": t["Approved symbol"],
        "alias": lst("Alias symbols"),
        "previous": lst("Previous symbols"),
        "ensembl": t["Ensembl gene ID"],
        "locus_type": t["Locus type"],
    })
    with gzip.GzipFile(OUT / "hgnc_compact.tsv.gz", "wb", mtime=0) as fh:
        fh.write(out.to_csv(sep="\t", index=False).encode())
    print(f"hgnc_compact.tsv.gz: {len(out)} approved entries")


def _finish(adata: ad.AnnData, dataset: str) -> ad.AnnData:
    from tfmkit.data.hgnc import harmonize_genes
    from tfmkit.data.validate import validate_counts

    validate_counts(adata.X, name=dataset)
    report = harmonize_genes(adata)
    print(f"{dataset}: {report.summary()}")
    keep = np.asarray((adata.X > 0).sum(axis=0)).ravel() >= 1
    adata = adata[:, keep].copy()
    adata.obs["dataset"] = dataset
    cols = [c for c in ("gene_ids", "original_symbol", "hgnc_status") if c in adata.var]
    adata.var = adata.var[cols].copy()
    del adata.uns["tfmkit_gene_report"]
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    print(f"{dataset}: {adata.n_obs} cells x {adata.n_vars} genes detected in >= 1 cell, nnz {adata.X.nnz}")
    return adata


QC_MIN_GENES, QC_MAX_GENES, QC_MIN_COUNTS, QC_MAX_PCT_MT = 200, 6000, 1000, 10.0


def balf_qc(adata: ad.AnnData) -> pd.DataFrame:
    """Per-cell QC metrics and pass flag (200 <= genes <= 6000, counts >= 1000, mito < 10%)."""
    X = adata.X
    n_genes = np.asarray((X > 0).sum(axis=1)).ravel()
    total = np.asarray(X.sum(axis=1)).ravel()
    mt = np.asarray(X[:, np.flatnonzero(adata.var_names.str.startswith("MT-"))].sum(axis=1)).ravel()
    pct_mt = 100 * mt / np.maximum(total, 1)
    ok = (n_genes >= QC_MIN_GENES) & (n_genes <= QC_MAX_GENES) & (total >= QC_MIN_COUNTS) & (pct_mt < QC_MAX_PCT_MT)
    return pd.DataFrame({"n_genes": n_genes.astype(np.int32), "total_counts": total.astype(np.float32),
                         "pct_counts_mt": pct_mt.astype(np.float32), "qc_pass": ok}, index=adata.obs_names)


def derive_balf_cell_types(adata: ad.AnnData, qc_pass: np.ndarray, seed: int = 0) -> np.ndarray:
    """Marker-derived coarse cell types for QC-passing cells ("low_quality" for the others):
    lognorm (1e4) -> scanpy score_genes per marker set; Leiden clusters (resolution 2) on 30 PCs
    of 2,000 HVGs; each cluster takes the cell type with the highest mean score among its cells
    ("unassigned" when no mean score is positive)."""
    a = adata[qc_pass].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    for ct, genes in BALF_MARKERS.items():
        genes = [g for g in genes if g in a.var_names]
        sc.tl.score_genes(a, genes, score_name=f"score_{ct}", random_state=seed)
    sc.pp.highly_variable_genes(a, n_top_genes=2000, batch_key="patient")
    sc.pp.pca(a, n_comps=30, mask_var="highly_variable", random_state=seed)
    # exact kNN; the pynndescent path of scanpy 1.11.5 fails with scipy 1.17 csr_array
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed, transformer="sklearn")
    sc.tl.leiden(a, resolution=2.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    scores = a.obs[[f"score_{ct}" for ct in BALF_MARKERS]]
    scores.columns = list(BALF_MARKERS)
    means = scores.groupby(a.obs["leiden"], observed=True).mean()
    label = means.idxmax(axis=1).where(means.max(axis=1) > 0, "unassigned")
    out = np.full(adata.n_obs, "low_quality", dtype=object)
    out[qc_pass] = a.obs["leiden"].map(label).astype(str).to_numpy()
    print("BALF derived cell types:\n" + pd.Series(out).value_counts().to_string())
    return out


def build_balf(shared: Path) -> None:
    parts = []
    for patient, fname in BALF_FILES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = sc.read_10x_h5(shared / "liao2020_balf" / fname)
        a.obs_names = [f"{patient}_{b}" for b in a.obs_names]
        a.obs["patient"] = patient
        parts.append(a)
    assert all((p.var["gene_ids"].values == parts[0].var["gene_ids"].values).all() for p in parts)
    var = parts[0].var[["gene_ids"]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.AnnData(sp.vstack([p.X for p in parts]).tocsr(), obs=pd.concat([p.obs for p in parts]), var=var)
    adata = _finish(adata, "liao2020_balf")
    qc = balf_qc(adata)
    for col in qc.columns:
        adata.obs[col] = qc[col].values
    adata.obs["cell_type_derived"] = derive_balf_cell_types(adata, qc["qc_pass"].to_numpy())
    from tfmkit.datasets.bundled import save_bundle

    save_bundle(OUT / "liao2020_balf.npz", adata)


def build_wu2020(shared: Path) -> None:
    a = ad.read_h5ad(shared / "wu2020" / "wu2020_200_v0_11.h5ad")
    a.obs = a.obs[["cluster_orig", "patient", "sample", "source", "batch"]].astype(str)
    a.obsm = {}
    a.uns = {}
    a = _finish(a, "wu2020")
    from tfmkit.datasets.bundled import save_bundle

    save_bundle(OUT / "wu2020.npz", a)


def build_pbmc68k() -> None:
    p = sc.datasets.pbmc68k_reduced()
    n = p.obs["n_counts"].to_numpy(np.float64)
    raw = p.raw.X.toarray().astype(np.float64)
    counts = np.expm1(raw) * n[:, None] / 1e4
    rel = np.abs(counts - np.rint(counts)) / np.maximum(counts, 1.0)
    print(f"pbmc68k: max relative deviation from integers before rounding {rel.max():.2e}")
    assert rel.max() < 1e-3, rel.max()
    a = ad.AnnData(sp.csr_matrix(np.rint(counts), dtype=np.float32),
                   obs=p.obs[["bulk_labels", "n_counts"]].copy(), var=pd.DataFrame(index=p.raw.var_names))
    a.obs["bulk_labels"] = a.obs["bulk_labels"].astype(str)
    a.obs["n_counts"] = a.obs["n_counts"].astype(np.float32)
    a = _finish(a, "pbmc68k")
    from tfmkit.datasets.bundled import save_bundle

    save_bundle(OUT / "pbmc68k.npz", a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder holding liao2020_balf/, wu2020/, gene_sets/ (default ../shared/data)")
    ap.add_argument("--only", nargs="*", default=["hgnc", "balf", "wu2020", "pbmc68k"],
                    help="subset of files to rebuild")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if "hgnc" in args.only:
        build_hgnc(args.shared)
        from tfmkit.data.hgnc import load_hgnc

        load_hgnc.cache_clear()
    if "balf" in args.only:
        build_balf(args.shared)
    if "wu2020" in args.only:
        build_wu2020(args.shared)
    if "pbmc68k" in args.only:
        build_pbmc68k()
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
