"""Runners and CLI on small real/synthetic data; model-dependent parts through a fake inference."""

from __future__ import annotations

import sys
import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import runners


@pytest.fixture(scope="module")
def pbmc():
    import scanpy as sc

    a = sc.datasets.pbmc68k_reduced()
    counts = np.rint(np.expm1(a.raw.X.toarray()) * a.obs["n_counts"].to_numpy()[:, None] / 1e4)
    b = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=a.obs[["bulk_labels"]].copy(),
                   var=pd.DataFrame(index=a.raw.var_names))
    b = b[:240].copy()
    b.obsm["X_pca"] = a.obsm["X_pca"][:240]
    b.obs["batch"] = np.random.default_rng(0).choice(["b0", "b1", "b2"], b.n_obs)
    return b


def test_benchmark_celltype_long_format(pbmc):
    df = runners.benchmark_celltype(pbmc, label_key="bulk_labels", batch_key="batch",
                                    obsm_keys=["X_pca"], baselines=("lognorm", "hvg5000", "pca20",
                                                                    "random_label_shuffle"),
                                    n_cells=200, n_seeds=2, probes=("knn",))
    assert list(df.columns) == ["embedding", "task", "metric", "value", "std", "n_seeds"]
    assert set(df.embedding) == {"X_pca", "lognorm", "pca20", "random_label_shuffle"}  # hvg5000 >= n_vars
    assert (df.n_seeds[df.task == "clustering"] == 2).all()
    nmi = df[df.metric == "nmi"].set_index("embedding")["value"]
    assert nmi["random_label_shuffle"] < nmi["lognorm"]
    assert {"knn_probe", "clustering", "batch_integration"} <= set(df.task)


def test_benchmark_celltype_errors(pbmc):
    with pytest.raises(TfmkitError):
        runners.benchmark_celltype(pbmc, label_key="nope")
    with pytest.raises(TfmkitError):
        runners.benchmark_celltype(pbmc, label_key="bulk_labels", obsm_keys=["X_missing"])
    logn = pbmc.copy()
    logn.X = np.log1p(logn.X.toarray())
    with pytest.raises(TfmkitError):
        runners.benchmark_celltype(logn, label_key="bulk_labels", n_seeds=1, probes=())


def _fake_inference(genes, rng):
    mod = types.ModuleType("tfmkit.inference")
    enc = pd.DataFrame(rng.normal(size=(len(genes), 8)), index=genes)
    dec = pd.DataFrame(rng.normal(size=(len(genes), 12)), index=genes)
    mod.gene_embeddings = lambda model, kind="encoder": enc if kind == "encoder" else dec
    mod.load_model = lambda path: object()

    def reconstruct(adata, model, *, n_revealed=None, seed=0, batch_size=64, layer=None, library_key=None):
        X = adata[:, genes].X
        counts = X.toarray() if sp.issparse(X) else np.asarray(X)
        target = np.log1p(1e5 * counts / np.maximum(counts.sum(1, keepdims=True), 1))
        r = np.random.default_rng(seed)
        revealed = np.zeros(counts.shape, bool)
        for i in range(len(counts)):
            revealed[i, r.choice(len(genes), n_revealed, replace=False)] = True
        pred = target + r.normal(size=target.shape) * 0.5
        return {"pred": pred, "logits": pred, "target": target, "counts": counts,
                "observable": np.ones(counts.shape, bool), "revealed": revealed, "genes": list(genes)}

    mod.reconstruct = reconstruct
    return mod


def test_benchmark_genes_and_pretraining_with_fake_model(pbmc, monkeypatch):
    genes = list(pbmc.var_names[:200])
    fake = _fake_inference(genes, np.random.default_rng(0))
    monkeypatch.setitem(sys.modules, "tfmkit.inference", fake)
    import tfmkit

    monkeypatch.setattr(tfmkit, "inference", fake, raising=False)
    g = runners.benchmark_genes(object(), adata=pbmc, databases=("hallmark",), n_null_pairs=5000)
    assert set(g.embedding) == {"encoder", "decoder", "pca128", "random_label_shuffle"}
    assert set(g.metric) == {"hallmark", "combined"} and (g.n_seeds == 3).all()
    p = runners.benchmark_pretraining(object(), pbmc[:40].copy(), mask_rates=(0.5, 0.9), n_seeds=2)
    assert set(p.task) == {"mask50", "mask90"} and set(p.embedding) == {"model", "gene_mean"}
    sp_model = p[(p.embedding == "model") & (p.metric == "spearman") & (p.task == "mask90")]
    assert sp_model["value"].iloc[0] > 0.5
    with pytest.raises(TfmkitError):
        runners.benchmark_pretraining(object(), pbmc, mask_rates=(1.5,))


def test_cli_celltype_writes_results(pbmc, tmp_path):
    from typer.testing import CliRunner

    from tfmkit.cli import app

    path = tmp_path / "in.h5ad"
    pbmc.write_h5ad(path)
    out = tmp_path / "out"
    args = ["benchmark", "celltype", "--input", str(path), "--label-key", "bulk_labels",
            "--batch-key", "batch", "--obsm", "X_pca", "--baselines", "pca20", "--n-seeds", "1",
            "--probes", "knn", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "results.csv").exists() and "| rank | embedding" in res.output
    res2 = CliRunner().invoke(app, args)
    assert res2.exit_code != 0 and isinstance(res2.exception, TfmkitError)
    for cmd in ("celltype", "genes", "pretraining"):
        assert CliRunner().invoke(app, ["benchmark", cmd, "--help"]).exit_code == 0
