"""Checks and accessors for the AnnData a benchmark runner is given (SPEC §6).

Every runner validates its input with these before any work starts, so a bad file gives a
one-line :class:`~tfmkit.errors.TfmkitError` that says what to do instead of a traceback from
scikit-learn or a ``KeyError`` after minutes of baselines:

- :func:`counts_matrix` — the raw counts in ``X``, a named layer or ``adata.raw``
  (``layer="raw"``), with the gene names that go with them; lists the available layers when
  the requested one is missing and refuses non-integer values;
- :func:`obs_column` — an ``obs`` column as strings, refusing missing values;
- :func:`require_cells` — a minimum number of cells;
- :func:`require_labels` — at least two distinct labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

RAW_LAYER = "raw"  # layer name meaning ``adata.raw``


def available_layers(adata) -> list[str]:
    """Names accepted by :func:`counts_matrix`: ``X`` (default), the layers, ``raw`` if any."""
    return ["X (default)", *map(str, adata.layers.keys())] + ([RAW_LAYER] if adata.raw is not None else [])


def counts_matrix(adata, layer: str | None = None, *, check: bool = True,
                  why: str = "baselines need them", fix: str = "point --layer at the raw counts"):
    """``(counts (N, G), gene names (G,))`` from ``X``, ``layers[layer]`` or ``adata.raw``.

    ``layer="raw"`` reads ``adata.raw.X`` and ``adata.raw.var_names`` (unless a layer is
    literally called ``raw``). With ``check`` the first 500 cells must hold finite,
    non-negative integers (raw counts); ``why`` and ``fix`` complete the error message.
    """
    if layer is None:
        X, genes, where = adata.X, adata.var_names, "X"
    elif layer in adata.layers:
        X, genes, where = adata.layers[layer], adata.var_names, f"layer {layer!r}"
    elif layer == RAW_LAYER and adata.raw is not None:
        X, genes, where = adata.raw.X, adata.raw.var_names, "adata.raw"
    else:
        raise TfmkitError(f"layer {layer!r} is not in the AnnData; available: "
                          f"{', '.join(available_layers(adata))} (pass one with --layer)")
    if X is None:
        raise TfmkitError(f"{where} is empty; point --layer at the raw counts")
    if check:
        sample = X[: min(X.shape[0], 500)]
        vals = sample.data if sp.issparse(sample) else np.asarray(sample).ravel()
        vals = np.asarray(vals, dtype=np.float64)
        if vals.size and (not np.isfinite(vals).all() or vals.min() < 0
                          or np.abs(vals - np.rint(vals)).max() > 1e-6):
            raise TfmkitError(f"{where} does not hold raw integer counts ({why}); {fix}")
    return X, pd.Index(genes.astype(str))


def obs_column(adata, key: str, what: str) -> np.ndarray:
    """``adata.obs[key]`` as a string array; refuses an absent column or missing values."""
    if key not in adata.obs:
        raise TfmkitError(f"{what} key {key!r} is not in adata.obs (columns: "
                          f"{', '.join(map(str, adata.obs.columns[:10])) or 'none'})")
    col = adata.obs[key]
    if col.isna().any():
        raise TfmkitError(f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; "
                          "drop or fill those cells first")
    return col.astype(str).to_numpy()


def require_cells(n_obs: int, minimum: int, what: str) -> None:
    """Refuse inputs with fewer than ``minimum`` cells (``what`` names the benchmark)."""
    if n_obs < minimum:
        raise TfmkitError(f"{what} needs at least {minimum} cells, the input has {n_obs}; "
                          "give a larger dataset")


def require_labels(labels: np.ndarray, key: str) -> None:
    """Refuse a label column with fewer than two distinct values."""
    uniq = np.unique(labels)
    if len(uniq) < 2:
        only = f" (only {uniq[0]!r})" if len(uniq) else ""
        raise TfmkitError(f"adata.obs[{key!r}] has a single label{only}; cell-type metrics need "
                          "at least two cell types (or pass only --batch-key for batch mixing)")
