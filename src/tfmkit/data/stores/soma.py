"""TileDB-SOMA count store: an experiment (the CELLxGENE Census format) read in row blocks.

Needs the optional ``tiledbsoma`` package (``pip install 'tfmkit[soma]'``). Cells are grouped
into datasets by an ``obs`` column (``dataset_id`` in the Census; one dataset when absent) and
ordered by (dataset, ``soma_joinid``). Counts come from ``ms[measurement].X[layer]`` (default:
the first of ``raw``, ``counts``, ``data``); gene names from ``var`` (``feature_name``, else
``var_id``), HGNC-harmonised like any other input.

Observable genes: with one dataset, every ``var`` gene; with several (``observable="nonzero"``,
the default then) a gene is taken as measured by a dataset when it is nonzero in at least one of
its cells — the union ``var`` of a multi-dataset experiment does not say which panel measured
what, and this keeps genes a panel lacks unknown rather than zero (a gene measured but never
detected in a dataset is then treated as unmeasured there). Library sizes and nonzero counts
come from one pass over ``X`` at open time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.data.stores.base import DEFAULT_BLOCK_CELLS, DEFAULT_CACHE_MB, RowStore
from tfmkit.errors import TfmkitError

SCAN_CELLS = 8192


def _soma():
    try:
        import tiledbsoma
    except ImportError as err:
        raise TfmkitError("reading a TileDB-SOMA experiment needs the tiledbsoma package: "
                          "pip install 'tfmkit[soma]'.") from err
    return tiledbsoma


def _read_coo(X, joinids: np.ndarray):
    """``(rows, cols, values)`` of the cells ``joinids`` (sorted) from a SOMA sparse array."""
    tbl = X.read(coords=(joinids,)).tables().concat()
    return (tbl["soma_dim_0"].to_numpy(), tbl["soma_dim_1"].to_numpy(),
            tbl["soma_data"].to_numpy().astype(np.float32))


class SomaStore(RowStore):
    """:class:`~tfmkit.data.store.CountStore` over a TileDB-SOMA experiment; use :meth:`open`."""

    def __init__(self, uri, measurement, layer, joinids, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uri, self.measurement, self.layer = str(uri), measurement, layer
        self.joinids = joinids  # (n_cells,) soma_joinid of each global cell

    @classmethod
    def open(cls, uri, *, vocab=None, measurement: str = "RNA", layer: str | None = None,
             dataset_column: str = "dataset_id", observable: str | None = None, min_cells: int = 1,
             allow_low_coverage: bool = False, block_cells: int = DEFAULT_BLOCK_CELLS,
             cache_mb: float = DEFAULT_CACHE_MB) -> "SomaStore":
        """Open the experiment at ``uri`` aligned to ``vocab`` (default: genes nonzero in
        ``>= min_cells`` cells). ``observable``: ``"all"`` or ``"nonzero"`` (see the module doc)."""
        import scipy.sparse as sp

        from tfmkit.data.corpus import _check_genes_map
        from tfmkit.data.sources import harmonized_columns, vocab_from_counts

        soma = _soma()
        with soma.Experiment.open(str(uri)) as exp:
            if "ms" not in exp or "obs" not in exp:  # e.g. an interrupted tiledbsoma.io.from_anndata
                raise TfmkitError(f"{uri} is not a complete SOMA experiment (no {'ms' if 'ms' not in exp else 'obs'} "
                                  "collection; was its writing interrupted?); delete it and write it again.")
            if measurement not in exp.ms:
                raise TfmkitError(f"{uri} has no measurement {measurement!r}; it has {sorted(exp.ms.keys())}.")
            ms = exp.ms[measurement]
            layers = list(ms.X.keys())
            layer = layer or next((k for k in ("raw", "counts", "data") if k in layers), None)
            if layer not in layers:
                raise TfmkitError(f"{uri}: X layer {layer!r} not found; layers: {layers} (pass --layer).")
            cols = ["soma_joinid"] + ([dataset_column] if dataset_column in exp.obs.keys() else [])
            obs = exp.obs.read(column_names=cols).concat().to_pandas()
            var = ms.var.read().concat().to_pandas()
            name_col = "feature_name" if "feature_name" in var else "var_id"
            var_joinids = var["soma_joinid"].to_numpy()
            var = var.set_index(var[name_col].astype(str)).drop(columns=["soma_joinid"])
            if dataset_column in obs:
                names = list(pd.unique(obs[dataset_column].astype(str)))
                ds = pd.Categorical(obs[dataset_column].astype(str), categories=names).codes.astype(np.int64)
            else:
                names, ds = [Path(str(uri)).name], np.zeros(len(obs), np.int64)
            order = np.lexsort((obs["soma_joinid"].to_numpy(), ds))
            joinids = obs["soma_joinid"].to_numpy()[order].astype(np.int64)
            ds_sorted = ds[order]
            n_rows = np.bincount(ds_sorted, minlength=len(names))
            n_vars = len(var)
            col_of_joinid = np.full(int(var_joinids.max()) + 1, -1, np.int64)
            col_of_joinid[var_joinids] = np.arange(n_vars)
            X = ms.X[layer]
            lib = np.zeros(len(joinids), np.float64)
            nz = np.zeros((len(names), n_vars), np.int64)
            for lo in range(0, len(joinids), SCAN_CELLS):  # one pass: library sizes, nonzero cells
                j = joinids[lo:lo + SCAN_CELLS]
                r, c, v = _read_coo(X, np.sort(j))
                pos = np.searchsorted(j, r) if np.all(np.diff(j) > 0) else pd.Index(j).get_indexer(r)
                M = sp.csr_matrix((v, (pos, col_of_joinid[c])), shape=(len(j), n_vars))
                M.eliminate_zeros()
                lib[lo:lo + len(j)] = np.asarray(M.sum(axis=1)).ravel()
                for d in np.unique(ds_sorted[lo:lo + len(j)]):
                    rows = ds_sorted[lo:lo + len(j)] == d
                    nz[d] += np.bincount(M[rows].indices, minlength=n_vars)
        symbols, kept, harm = harmonized_columns(var, Path(str(uri)).name)
        vocab_given = vocab is not None
        if vocab is None:
            vocab = vocab_from_counts([(symbols, nz.sum(0)[kept])], min_cells)
        observable = observable or ("all" if len(names) == 1 else "nonzero")
        if observable not in ("all", "nonzero"):
            raise TfmkitError(f"observable must be 'all' or 'nonzero', got {observable!r}.")
        gi = vocab.gene_index(symbols)
        _check_genes_map(Path(str(uri)).name, harm, vocab, vocab_given, allow_low_coverage)
        colmaps = []
        for d in range(len(names)):
            cm = np.full(n_vars, -1, np.int64)
            cm[kept] = gi
            if observable == "nonzero":
                cm[nz[d] == 0] = -1
            colmaps.append(cm)
        total = np.zeros(vocab.n_genes, np.int64)
        k = gi >= 0
        np.add.at(total, gi[k], nz.sum(0)[kept][k])
        store = cls(uri, measurement, layer, joinids, vocab, names, n_rows, colmaps, lib, total,
                    block_cells=block_cells, cache_mb=cache_mb)
        store._var_col_of_joinid = col_of_joinid
        store._dataset_column = dataset_column
        return store

    def _array(self):
        h = self._handles.get("X")
        if h is None:
            soma = _soma()
            exp = soma.Experiment.open(self.uri)
            h = self._handles["X"] = (exp, exp.ms[self.measurement].X[self.layer])
        return h[1]

    def _read_block(self, d: int, lo: int, hi: int):
        j = self.joinids[self.offsets[d] + lo:self.offsets[d] + hi]  # sorted within a dataset
        r, c, v = _read_coo(self._array(), j)
        pos = np.searchsorted(j, r)
        order = np.lexsort((c, pos))
        counts = np.bincount(pos, minlength=hi - lo)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return indptr, self._var_col_of_joinid[c[order]], v[order]

    def _read_obs(self, d: int) -> pd.DataFrame:
        soma = _soma()
        j = self.joinids[self.offsets[d]:self.offsets[d + 1]]
        with soma.Experiment.open(self.uri) as exp:
            obs = exp.obs.read(coords=(j,)).concat().to_pandas()
        obs = obs.set_index("soma_joinid").loc[j]
        obs.index = obs["obs_id"].astype(str).to_numpy() if "obs_id" in obs else obs.index.astype(str)
        return obs
