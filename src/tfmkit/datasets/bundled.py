"""Real single-cell datasets bundled inside the package (raw integer UMI counts).

Files live in ``tfmkit/datasets/files/`` as compressed ``.npz`` archives (CSR with the smallest
integer dtypes that fit, column indices delta-encoded per row for better compression, gene
symbols, Ensembl ids, obs columns). They are regenerated from ``../shared/data`` and scanpy by
``scripts/build_bundled_data.py``; provenance and licences are in ``DATA_NOTES.md``.

Every loader returns an AnnData with float32 CSR raw counts in ``X``, HGNC-harmonised
``var_names`` (``var['gene_ids']``, ``var['original_symbol']``, ``var['hgnc_status']``), and
``obs['dataset']``.
"""

from __future__ import annotations

from importlib import resources

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

BALF_PATIENTS = ("C144", "C146", "C149")
OBS_PREFIX = "obs__"
VAR_PREFIX = "var__"


def _smallest_uint(max_value: int):
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return dt
    return np.uint64


def pack_csr(X: sp.csr_matrix) -> dict:
    """Encode an integer-valued CSR matrix as compact arrays (inverse: :func:`unpack_csr`).

    Column indices are stored as per-row differences (first index of each row as is), which are
    small and compress well; values and differences use the smallest unsigned dtype that fits.
    """
    X = sp.csr_matrix(X)
    X.sort_indices()
    X.eliminate_zeros()
    vals = np.rint(X.data).astype(np.int64)
    if vals.size and (np.abs(X.data - vals).max() > 1e-6 or vals.min() < 0):
        raise ValueError("pack_csr expects non-negative integer counts")
    idx = X.indices.astype(np.int64)
    delta = np.diff(idx, prepend=0)
    starts = X.indptr[:-1][np.diff(X.indptr) > 0]
    delta[starts] = idx[starts]
    return {
        "shape": np.asarray(X.shape, dtype=np.int64),
        "indptr": X.indptr.astype(np.int64 if X.nnz > 2**31 - 1 else np.int32),
        "delta": delta.astype(_smallest_uint(int(delta.max(initial=0)))),
        "data": vals.astype(_smallest_uint(int(vals.max(initial=0)))),
    }


def unpack_csr(arrs) -> sp.csr_matrix:
    """Decode the arrays written by :func:`pack_csr` into a float32 CSR matrix."""
    indptr = arrs["indptr"].astype(np.int64)
    delta = arrs["delta"].astype(np.int64)
    starts = indptr[:-1][np.diff(indptr) > 0]
    # cumulative sum restarted at every row start
    csum = np.cumsum(delta)
    offset = np.zeros_like(delta)
    offset[starts] = csum[starts] - delta[starts]
    indices = csum - np.maximum.accumulate(offset)
    shape = tuple(int(s) for s in arrs["shape"])
    return sp.csr_matrix((arrs["data"].astype(np.float32), indices.astype(np.int32), indptr), shape=shape)


def save_bundle(path, adata: ad.AnnData) -> None:
    """Write ``adata`` (integer counts in X; string/numeric obs and var columns) to ``path``."""
    arrs = pack_csr(adata.X)
    arrs["obs_names"] = adata.obs_names.to_numpy().astype(str)
    arrs["var_names"] = adata.var_names.to_numpy().astype(str)
    for col in adata.obs.columns:
        v = adata.obs[col]
        arrs[OBS_PREFIX + col] = v.to_numpy() if v.dtype.kind in "biuf" else v.astype(str).to_numpy().astype(str)
    for col in adata.var.columns:
        arrs[VAR_PREFIX + col] = adata.var[col].astype(str).to_numpy().astype(str)
    np.savez_compressed(path, **arrs)


def load_bundle(filename: str) -> ad.AnnData:
    """Read a bundled ``.npz`` from ``tfmkit/datasets/files`` into an AnnData."""
    ref = resources.files("tfmkit.datasets").joinpath("files", filename)
    if not ref.is_file():
        raise TfmkitError(
            f"bundled data file {filename} is missing from the installation; reinstall tfmkit or run "
            f"scripts/build_bundled_data.py."
        )
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        X = unpack_csr(z)
        obs = pd.DataFrame(
            {k[len(OBS_PREFIX):]: z[k] for k in z.files if k.startswith(OBS_PREFIX)},
            index=pd.Index(z["obs_names"].astype(str)),
        )
        var = pd.DataFrame(
            {k[len(VAR_PREFIX):]: z[k].astype(str) for k in z.files if k.startswith(VAR_PREFIX)},
            index=pd.Index(z["var_names"].astype(str)),
        )
    for col in obs.columns:
        if obs[col].dtype.kind in "UO":
            obs[col] = pd.Categorical(obs[col].astype(str))
    return ad.AnnData(X=X, obs=obs, var=var)


def load_balf(patients=None, *, qc: bool = False) -> ad.AnnData:
    """Bronchoalveolar lavage fluid cells of 3 COVID-19 patients (Liao et al. 2020, Nat Med).

    10,706 cells (C144: 3,716; C146: 4,111; C149: 2,879) x 24,290 genes detected in at least
    one cell, raw UMI counts of the Cell Ranger filtered matrices. ``obs``: ``patient``,
    ``dataset`` (``"liao2020_balf"``), QC metrics ``n_genes``, ``total_counts``,
    ``pct_counts_mt``, ``qc_pass`` (200-6000 genes, >= 1000 UMIs, < 10% mitochondrial; only
    3,732 cells pass), ``cell_type_derived`` and ``cell_type_derived_is_derived`` (always
    ``True``).

    ``cell_type_derived`` is NOT a published annotation: tfmkit derived it from canonical marker
    genes (scanpy ``score_genes`` on log-normalised counts, best mean score per Leiden cluster
    of QC-passing cells; ``"low_quality"`` for cells failing QC; see DATA_NOTES.md). Use it for
    demos and sanity checks, not as ground truth.

    Parameters
    ----------
    patients
        Subset of ``("C144", "C146", "C149")``; all three when ``None``.
    qc
        Keep only cells with ``qc_pass`` (3,732 cells).
    """
    adata = load_bundle("liao2020_balf.npz")
    if patients is not None:
        patients = [patients] if isinstance(patients, str) else list(patients)
        bad = sorted(set(patients) - set(BALF_PATIENTS))
        if bad:
            raise TfmkitError(f"unknown BALF patient(s) {bad}; choose from {list(BALF_PATIENTS)}.")
        adata = adata[adata.obs["patient"].isin(patients)].copy()
    if qc:
        adata = adata[adata.obs["qc_pass"].to_numpy(bool)].copy()
    adata.obs["cell_type_derived_is_derived"] = True
    return adata


def load_wu2020() -> ad.AnnData:
    """200 T cells from tumour, normal adjacent tissue and blood (Wu et al. 2020, Nature).

    Raw UMI counts (genes detected in at least one cell). ``obs``: ``cluster_orig`` (16 published
    T-cell subtypes), ``patient``, ``sample``, ``source``, ``batch``, ``dataset`` (``"wu2020"``).
    """
    return load_bundle("wu2020.npz")


def load_pbmc68k() -> ad.AnnData:
    """700 PBMCs (scanpy ``pbmc68k_reduced``; 10x Genomics, Zheng et al. 2017), 765 genes.

    Raw counts recovered as ``round(expm1(raw.X) * n_counts / 1e4)`` (relative rounding error
    below 1e-3 for every entry). ``obs``: ``bulk_labels`` (10 cell types), ``n_counts`` (total
    counts of the original cell over all genes, the library size used by scanpy), ``dataset``
    (``"pbmc68k"``). Note ``X.sum(1)`` is smaller than ``n_counts``: only 765 genes were kept.
    """
    return load_bundle("pbmc68k.npz")


def load_corpus(names=("balf",), *, qc: bool = False) -> dict:
    """Per-batch AnnDatas for pretraining: ``"balf"`` -> ``balf_C144``, ``balf_C146``,
    ``balf_C149``; ``"wu2020"`` and ``"pbmc68k"`` -> one entry each. ``qc=True`` keeps only
    BALF cells passing QC (see :func:`load_balf`)."""
    names = [names] if isinstance(names, str) else list(names)
    out: dict[str, ad.AnnData] = {}
    for name in names:
        if name == "balf":
            full = load_balf(qc=qc)
            for p in BALF_PATIENTS:
                out[f"balf_{p}"] = full[full.obs["patient"] == p].copy()
        elif name in DATASETS:
            out[name] = DATASETS[name][0]()
        else:
            raise TfmkitError(f"unknown bundled dataset {name!r}; choose from {sorted(DATASETS)}.")
    return out


DATASETS = {
    "balf": (load_balf, "Liao 2020 COVID-19 BALF, 3 patients, 10,706 cells (3,732 pass QC), raw UMI counts, marker-derived cell types"),
    "wu2020": (load_wu2020, "Wu 2020 tumour/normal/blood T cells, 200 cells, 16 published subtypes, raw UMI counts"),
    "pbmc68k": (load_pbmc68k, "scanpy pbmc68k_reduced, 700 PBMCs x 765 genes, 10 cell types, recovered raw counts"),
}
