"""Strong simple baselines computed on the evaluation data (SPEC §6 "Baselines").

Names follow the SPEC §1 long-format contract: ``raw`` (raw counts of all genes), ``lognorm``
(all genes, library-size normalised to ``L`` + log1p), ``hvg<N>`` (lognorm restricted to the ``N`` most
variable genes, scanpy ``seurat`` flavour on the lognorm data), ``pca<N>`` (``N`` principal
components of lognorm, via scanpy/ARPACK on the sparse matrix), ``scvi`` (scVI latent space fit on
the evaluation counts; optional extra ``tfmkit[baselines]``, :mod:`tfmkit.evaluation.scvi_baseline`). ``random_label_shuffle`` is not an
embedding: runners evaluate the ``lognorm`` baseline against permuted labels and report it under
that name (:func:`shuffled_labels`).
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

from tfmkit.data.normalize import DEFAULT_LIBRARY_SIZE, lognorm
from tfmkit.errors import TfmkitError

DEFAULT_BASELINES = ("raw", "lognorm", "hvg2000", "pca50")
RANDOM_LABEL_SHUFFLE = "random_label_shuffle"
_PATTERN = re.compile(r"^(raw|lognorm|hvg(\d+)|pca(\d+)|scvi)$")


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def _highly_variable(L, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` genes with the highest normalised dispersion (seurat flavour)."""
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=sp.csr_matrix(L) if not sp.issparse(L) else L.copy())
    n_top = min(n_top, tmp.n_vars)
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


#: Largest ``N x G`` that ``raw`` / ``lognorm`` densify (float32: 1.6 GB).
MAX_DENSE_VALUES = 400_000_000


def baseline_embedding(counts, name: str, *, library_size: float = DEFAULT_LIBRARY_SIZE,
                       seed: int = 0, max_dense_values: int = MAX_DENSE_VALUES) -> np.ndarray:
    """One baseline representation ``(N, D)`` of raw ``counts`` ``(N, G)`` (sparse or dense).

    ``raw`` and ``lognorm`` use every gene (as their names say; ``hvg<N>`` is the variable-gene
    subset); an input with more than ``max_dense_values`` entries is refused rather than
    silently cut to a gene subset.
    """
    m = _PATTERN.match(name)
    if m is None:
        raise TfmkitError(f"unknown baseline {name!r}; use raw, lognorm, hvg<N>, pca<N> or scvi")
    if name == "scvi":  # optional extra: tfmkit[baselines]
        from tfmkit.evaluation.scvi_baseline import scvi_embedding

        return scvi_embedding(counts, seed=seed)
    if name in ("raw", "lognorm") and counts.shape[0] * counts.shape[1] > max_dense_values:
        raise TfmkitError(f"baseline {name!r} on {counts.shape[0]} x {counts.shape[1]} counts would "
                          f"densify more than {max_dense_values:,} values; use hvg5000 or pca50, or "
                          "subsample the cells")
    L = lognorm(counts, library_size)
    if name in ("raw", "lognorm"):
        return _dense(counts if name == "raw" else L)
    if m.group(2):
        return _dense(L[:, _highly_variable(L, int(m.group(2)))])
    n_comps = min(int(m.group(3)), min(L.shape) - 1)
    from sklearn.decomposition import PCA

    if sp.issparse(L):
        # centred PCA on a sparse matrix without densifying (scanpy's approach)
        import anndata as ad
        import scanpy as sc

        tmp = ad.AnnData(X=sp.csr_matrix(L))
        sc.pp.pca(tmp, n_comps=n_comps, random_state=seed, svd_solver="arpack")
        return np.asarray(tmp.obsm["X_pca"], dtype=np.float32)
    return PCA(n_comps, random_state=seed).fit_transform(L).astype(np.float32)


def baseline_embeddings(counts, names=DEFAULT_BASELINES, **kwargs) -> dict[str, np.ndarray]:
    """``{name: baseline_embedding(counts, name)}`` for every requested baseline name."""
    return {n: baseline_embedding(counts, n, **kwargs) for n in names}


def shuffled_labels(labels, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``labels``: the chance-level control ``random_label_shuffle``."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))
