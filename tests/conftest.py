"""Shared fixtures: small synthetic raw-count datasets with different gene panels."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

os.environ.setdefault("TFMKIT_NO_PROGRESS", "1")

# Real HGNC approved symbols so that harmonisation keeps them.
GENES = [
    "CD3E", "CD3D", "CD4", "CD8A", "CD8B", "MS4A1", "CD19", "CD79A", "NKG7", "GNLY",
    "CD68", "MARCO", "FABP4", "LYZ", "S100A8", "S100A9", "FCGR3A", "FCGR3B", "EPCAM", "KRT18",
    "JCHAIN", "MZB1", "IL7R", "CCR7", "SELL", "GZMB", "PRF1", "ACTB", "GAPDH", "B2M",
    "MALAT1", "RPL13", "RPS27", "TPT1", "EEF1A1", "FTL", "FTH1", "HLA-DRA", "CD74", "APOE",
]


#: Tiny TxFM settings of the fine-tuning tests' parent models (each file adds its data and steps).
TINY_TXFM = ["model.dim=32", "model.depth=2", "model.heads=2", "model.decoder_layers=1", "data.min_cells=1",
             "data.val_fraction=0.1", "train.batch_size=16", "train.val_every=0"]


def pretrain_parent(out, adata: ad.AnnData, overrides: list[str]):
    """Model directory of a ``txfm_tiny`` model with config ``overrides`` pretrained on ``adata``
    (dataset ``toy``) into the new run folder ``out``."""
    from tfmkit.config import load_config
    from tfmkit.training import pretrain

    return pretrain(load_config("txfm_tiny", overrides), out, adatas={"toy": adata}, progress=False)


def make_counts(n_cells: int, genes: list[str], seed: int = 0, n_types: int = 3) -> ad.AnnData:
    """NB counts with ``n_types`` cell types that differ in a block of marker genes."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(2.0, 1.0, len(genes))
    rate = np.tile(base, (n_cells, 1))
    for t in range(n_types):
        block = slice(t * 4, t * 4 + 4)
        rate[types == t, block] *= 8.0
    depth = rng.uniform(0.5, 2.0, n_cells)[:, None]
    X = rng.poisson(rng.gamma(5.0, rate * depth / 5.0)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"cell_type": [f"type{t}" for t in types],
                                                       "batch": rng.choice(["b0", "b1"], n_cells)},
                                                      index=[f"c{seed}_{i}" for i in range(n_cells)]),
                   var=pd.DataFrame(index=genes))
    a.obs["cell_type"] = a.obs["cell_type"].astype("category")
    return a


@pytest.fixture
def two_panels():
    """Two datasets with overlapping but different gene panels (30 genes each, 20 shared)."""
    return {"panel_a": make_counts(64, GENES[:30], seed=1), "panel_b": make_counts(48, GENES[10:], seed=2)}
