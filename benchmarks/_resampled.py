"""Large test corpora for the scale benchmarks: bundled BALF counts resampled to N cells.

Cells (rows) of the QC-passing bundled BALF data (Liao et al. 2020, 3 patients, 24,290 genes)
are drawn with replacement (seeded) and appended block by block to a CSR ``.h5ad`` with
``anndata.io.sparse_dataset(...).append``, so building a 1M-cell (~13 GB) file needs only one
block in memory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def write_resampled_h5ad(path, n_cells: int, *, seed: int = 0, block: int = 50_000) -> Path:
    """Write ``n_cells`` resampled BALF cells to ``path`` (skipped when it already has them)."""
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    from tfmkit.datasets import load_corpus

    path = Path(path)
    if path.is_file():
        with h5py.File(path, "r") as f:
            if int(f["X"].attrs["shape"][0]) == n_cells:
                return path
    parts = load_corpus(("balf",), qc=True)
    X = sp.vstack([a.X for a in parts.values()]).tocsr()
    patient = np.concatenate([np.full(a.n_obs, name) for name, a in parts.items()])
    var = next(iter(parts.values())).var[[]].copy()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, X.shape[0], n_cells)
    tmp = path.with_name(path.name + ".tmp")
    t0 = time.perf_counter()
    obs = pd.DataFrame({"patient": pd.Categorical(patient[rows])},
                       index=pd.Index([f"cell{i}" for i in range(n_cells)]))
    skeleton = ad.AnnData(obs=obs, var=var)
    skeleton.write_h5ad(tmp)
    with h5py.File(tmp, "a") as f:
        for lo in range(0, n_cells, block):
            blk = X[rows[lo:lo + block]].tocsr()
            if lo == 0:
                write_elem(f, "X", blk)
            else:
                sparse_dataset(f["X"]).append(blk)
    os.replace(tmp, path)
    print(f"wrote {path} ({n_cells} cells, {path.stat().st_size / 1e9:.2f} GB) in "
          f"{time.perf_counter() - t0:.0f} s")
    return path
