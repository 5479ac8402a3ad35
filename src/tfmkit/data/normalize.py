"""Library-size normalisation + log1p (TxFM eqs. 3-4; SPEC §2).

``x~_ng = log(1 + L * x_ng / sum_i x_ni)`` with ``L = 1e5`` by default. Equivalent to scanpy's
``normalize_total(target_sum=L)`` followed by ``log1p``; written here (rather than calling scanpy)
because it must run on CSR blocks, dense numpy rows and torch batches alike without copying an
AnnData. Cells with zero total stay all-zero. The row sum here is over the given genes; training
batches divide by each cell's total over *all* its original genes instead
(:func:`tfmkit.data.transforms.log1p_normalize`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_LIBRARY_SIZE = 1e5


def lognorm(X, library_size: float = DEFAULT_LIBRARY_SIZE):
    """Return ``log1p(L * X / rowsum(X))`` for a CSR/CSC matrix, dense array or tensor ``(N, G)``.

    Sparse input stays sparse (zeros map to zeros). Output dtype is float32.
    """
    if isinstance(X, torch.Tensor):
        total = X.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (N, 1)
        return torch.log1p(X * (library_size / total))
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        total = np.asarray(X.sum(axis=1)).ravel()
        scale = np.divide(library_size, total, out=np.zeros_like(total), where=total > 0)
        X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
        np.log1p(X.data, out=X.data)
        return X
    X = np.asarray(X, dtype=np.float32)
    total = X.sum(axis=-1, keepdims=True)
    scale = np.divide(library_size, total, out=np.zeros_like(total), where=total > 0)
    return np.log1p(X * scale).astype(np.float32)


def normalize_log1p(adata, *, library_size: float = DEFAULT_LIBRARY_SIZE, layer: str | None = None,
                    key_added: str = "lognorm", copy: bool = False):
    """Write ``lognorm(counts)`` to ``adata.layers[key_added]`` (scanpy style).

    Keys written: ``.layers[key_added]``. Returns the AnnData when ``copy=True`` else ``None``.
    """
    adata = adata.copy() if copy else adata
    X = adata.layers[layer] if layer is not None else adata.X
    adata.layers[key_added] = lognorm(X, library_size)
    return adata if copy else None
