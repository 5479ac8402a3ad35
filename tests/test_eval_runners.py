"""Runners on small real data with a real (tiny, 2-step) model; input checks before any work."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import baselines as B
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


@pytest.fixture(scope="module")
def model(pbmc, tmp_path_factory):
    from tfmkit import load_model
    from tfmkit.config import load_config
    from tfmkit.training import pretrain

    cfg = load_config("txfm_tiny", ["model.dim=32", "model.depth=1", "model.heads=2",
                                    "model.decoder_layers=1", "data.n_revealed=32", "data.min_cells=1",
                                    "train.batch_size=8", "train.steps=2", "train.val_every=0"])
    out = tmp_path_factory.mktemp("model")
    return load_model(pretrain(cfg, out, adatas={"pbmc": pbmc}, progress=False))


def _ensembl(adata: ad.AnnData) -> ad.AnnData:
    """The same counts with Ensembl ids as var_names and the symbols in var['gene_symbols']."""
    from tfmkit.data.hgnc import load_hgnc

    ens = {sym: e for e, sym in load_hgnc().ensembl.items()}
    keep = [g for g in adata.var_names if g in ens]
    out = adata[:, keep].copy()
    out.var["gene_symbols"] = keep
    out.var_names = [ens[g] for g in keep]
    return out


def test_benchmark_celltype_long_format(pbmc):
    df = runners.benchmark_celltype(pbmc, label_key="bulk_labels", batch_key="batch",
                                    obsm_keys=["X_pca"], baselines=("lognorm", "hvg5000", "pca20",
                                                                    "random_label_shuffle"),
                                    n_cells=200, n_seeds=2, probes=("knn",))
    assert list(df.columns) == ["embedding", "task", "metric", "value", "std", "n_seeds",
                                "n_cells_used", "max_cells"]
    assert (df.n_cells_used == 240).all() and df.max_cells.isna().all()
    assert set(df.embedding) == {"X_pca", "lognorm", "pca20", "random_label_shuffle"}  # hvg5000 >= n_vars
    assert (df.n_seeds[df.task == "clustering"] == 2).all()
    nmi = df[df.metric == "nmi"].set_index("embedding")["value"]
    assert nmi["random_label_shuffle"] < nmi["lognorm"]
    assert {"knn_probe", "clustering", "batch_integration"} <= set(df.task)


def test_benchmark_celltype_errors(pbmc):
    with pytest.raises(TfmkitError, match="label key 'nope' is not in adata.obs"):
        runners.benchmark_celltype(pbmc, label_key="nope")
    with pytest.raises(TfmkitError, match=r"obsm key\(s\) \['X_missing'\] not in adata.obsm"):
        runners.benchmark_celltype(pbmc, label_key="bulk_labels", obsm_keys=["X_missing"])
    logn = pbmc.copy()
    logn.X = np.log1p(logn.X.toarray())
    with pytest.raises(TfmkitError, match="X does not hold raw integer counts"):
        runners.benchmark_celltype(logn, label_key="bulk_labels", n_seeds=1, probes=())
    with pytest.raises(TfmkitError, match="give --label-key .* and/or --batch-key"):
        runners.benchmark_celltype(pbmc)


def test_celltype_layer_raw_uses_adata_raw(pbmc):
    """``layer='raw'`` (documented) reads ``adata.raw``: same numbers as the counts in X."""
    a = pbmc.copy()
    a.raw = a
    a.X = np.log1p(a.X.toarray())  # X normalised, counts only in .raw
    kw = dict(label_key="bulk_labels", baselines=("pca20",), n_seeds=1, probes=())
    got = runners.benchmark_celltype(a, layer="raw", **kw)
    ref = runners.benchmark_celltype(pbmc, **kw)
    pd.testing.assert_frame_equal(got, ref)


def test_celltype_missing_layer_lists_available(pbmc):
    a = pbmc.copy()
    a.layers["spliced"] = a.X.copy()
    with pytest.raises(TfmkitError, match=r"layer 'counts' is not in the AnnData; available: "
                                          r"X \(default\), spliced \(pass one with --layer\)"):
        runners.benchmark_celltype(a, label_key="bulk_labels", layer="counts", n_seeds=1)


def test_celltype_too_few_cells_and_single_label_fail_before_work(pbmc, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("baselines were computed before the input check")

    monkeypatch.setattr(B, "baseline_embeddings", no_work)
    with pytest.raises(TfmkitError, match="needs at least 20 cells, the input has 1"):
        runners.benchmark_celltype(pbmc[:1].copy(), label_key="bulk_labels")
    one = pbmc.copy()
    one.obs["bulk_labels"] = "T cell"
    with pytest.raises(TfmkitError, match=r"has a single label \(only 'T cell'\)"):
        runners.benchmark_celltype(one, label_key="bulk_labels")


def test_celltype_batch_only_mode(pbmc):
    """No labels: only batch-mixing metrics, equal to scIB definitions computed independently."""
    import scib_metrics
    from sklearn.metrics import silhouette_samples

    from tfmkit.evaluation.clustering import exact_neighbors

    df = runners.benchmark_celltype(pbmc, batch_key="batch", obsm_keys=["X_pca"],
                                    baselines=("pca20", "random_label_shuffle"), n_seeds=1)
    assert set(df.embedding) == {"X_pca", "pca20"}  # no label shuffle without labels
    assert set(df.metric) == {"ilisi", "asw_batch"} and set(df.task) == {"batch_integration"}
    X = np.asarray(pbmc.obsm["X_pca"], dtype=np.float32)
    b = pbmc.obs["batch"].to_numpy()
    row = df[df.embedding == "X_pca"].set_index("metric")["value"]
    assert row["asw_batch"] == pytest.approx(np.mean(1 - np.abs(silhouette_samples(X, b))), abs=1e-5)
    assert row["ilisi"] == pytest.approx(float(scib_metrics.ilisi_knn(exact_neighbors(X, 90), b)), abs=1e-5)
    with pytest.raises(TfmkitError, match="single batch"):
        one = pbmc.copy()
        one.obs["batch"] = "b0"
        runners.benchmark_celltype(one, batch_key="batch")


def test_pca_loadings_harmonise_ensembl_ids(pbmc):
    genes = list(pbmc.var_names[:300])
    ens = _ensembl(pbmc)
    ref = runners.pca_loadings(pbmc[:, ens.var["gene_symbols"].to_numpy()].copy(), genes, n_components=10)
    got = runners.pca_loadings(ens, genes, n_components=10)
    assert list(got.index) == list(ref.index) and len(ref) > 250
    np.testing.assert_allclose(np.abs(got.to_numpy()), np.abs(ref.to_numpy()), atol=1e-5)
    with pytest.raises(TfmkitError, match="only 0 of the model's 2 genes are in the data"):
        runners.pca_loadings(pbmc, ["NOTAGENE1", "NOTAGENE2"])


def test_benchmark_genes_with_real_model_on_ensembl_data(pbmc, model):
    from tfmkit import gene_embeddings

    g = runners.benchmark_genes(model, adata=_ensembl(pbmc), databases=("hallmark",), n_null_pairs=5000,
                                tasks=("recall",))
    assert set(g.embedding) == {"encoder", "decoder", "pca128", "random_label_shuffle"}
    assert set(g.metric) == {"hallmark", "combined"} and (g.n_seeds == 3).all()
    # the runner scores exactly the model's gene tables: same numbers from representations
    from tfmkit.evaluation.gene_recall import PCA_COMPONENTS

    reps = {k: (gene_embeddings(model, kind=k), PCA_COMPONENTS[k]) for k in ("encoder", "decoder")}
    direct = runners.benchmark_genes(representations=reps, databases=("hallmark",), n_null_pairs=5000,
                                     tasks=("recall",))
    pd.testing.assert_frame_equal(direct.reset_index(drop=True),
                                  g[g.embedding.isin(["encoder", "decoder"])].reset_index(drop=True))


def test_benchmark_genes_grn_and_lda_on_the_same_genes(pbmc, model):
    from tfmkit import gene_embeddings
    from tfmkit.datasets.genesets import load_gene_annotation, load_tf_roles, load_tf_targets
    from tfmkit.evaluation import grn as GRN
    from tfmkit.evaluation.gene_lda import lda_probe

    g = runners.benchmark_genes(model, adata=pbmc, tasks=("grn", "lda"))
    grn = g[g.task == "grn"].set_index(["embedding", "metric"])
    assert set(grn.index.get_level_values(0)) == {"encoder", "decoder", "pca128", "random_label_shuffle",
                                                   "coexpression"}
    lda = g[g.task == "gene_annotation"].set_index("embedding")
    assert set(lda.index) == {"encoder", "decoder", "pca128", "random_label_shuffle"}
    assert (lda.metric == "lda_balanced_accuracy").all() and len(set(lda.n_pairs)) == 1  # same genes
    # independent recomputation of the encoder rows on the genes expressed in the data
    enc = gene_embeddings(model, kind="encoder")
    from tfmkit.data.hgnc import harmonize_genes

    h = pbmc.copy()
    harmonize_genes(h)  # the model's genes are HGNC symbols
    expressed = set(h.var_names[np.asarray(h.X.sum(0)).ravel() > 0])
    genes = [x for x in enc.index if x in expressed]
    per_tf = GRN.grn_auroc(enc.loc[genes], load_tf_targets(), roles=load_tf_roles())
    mean, std, n_tfs = GRN.grn_summary(per_tf)["grn_auroc"]
    row = grn.loc[("encoder", "grn_auroc")]
    assert row.value == pytest.approx(mean) and row.n_seeds == n_tfs > 0 and row["std"] == pytest.approx(std)
    res = lda_probe(enc.loc[genes], load_gene_annotation("go_cc"))
    assert lda.loc["encoder", "value"] == pytest.approx(res["balanced_accuracy"])
    assert lda.loc["encoder", "n_pairs"] == res["n_genes"]
    with pytest.raises(TfmkitError, match="unknown gene task"):
        runners.benchmark_genes(model, tasks=("grn", "motifs"))


def test_benchmark_pretraining_top_context_with_real_model(pbmc, model):
    from tfmkit.evaluation.pretraining_quality import reconstruction_metrics
    from tfmkit.inference import reconstruct

    a = pbmc[:40].copy()
    p = runners.benchmark_pretraining(model, a, mask_rates=(0.5, 0.9))
    assert set(p.task) == {"mask50", "mask90"} and set(p.embedding) == {"model", "gene_mean"}
    assert set(p.metric) == {"poisson_loss", "spearman", "spearman_masked", "binary_correctness",
                             "binary_correctness_masked"}
    # independent recomputation for mask90: each cell shows its top round(0.1 · n_expressed) genes
    rec = reconstruct(a, model, reveal="top", context_fraction=0.1, n_revealed=1024)
    n_expr = ((rec["counts"] > 0) & rec["observable"]).sum(1)
    np.testing.assert_array_equal(rec["revealed"].sum(1), np.clip(np.floor(0.1 * n_expr + 0.5), 1, None))
    row = p[(p.embedding == "model") & (p.task == "mask90") & (p.metric == "spearman")].iloc[0]
    assert row.value == pytest.approx(np.nanmean(reconstruction_metrics(rec)["spearman"]), rel=1e-3)  # float noise in near-tied logits
    with pytest.raises(TfmkitError, match="reveal='top' is deterministic: use n_seeds=1"):
        runners.benchmark_pretraining(model, a, n_seeds=2)
    with pytest.raises(TfmkitError, match="reveal must be one of random, top"):
        runners.benchmark_pretraining(model, a, reveal="bottom")


def test_benchmark_pretraining_with_real_model(pbmc, model):
    from tfmkit.evaluation.pretraining_quality import reconstruction_metrics
    from tfmkit.inference import context_size, reconstruct

    a = pbmc[:40].copy()
    p = runners.benchmark_pretraining(model, a, mask_rates=(0.5, 0.9), n_seeds=2, reveal="random")
    assert set(p.task) == {"mask50", "mask90"} and set(p.embedding) == {"model", "gene_mean"}
    # independent recomputation for mask90: n = max(1, round(0.1 · median observable genes)),
    # capped at the model's training context K
    probe = reconstruct(a, model, n_revealed=1, seed=0)
    n = min(context_size(model), max(1, int(round(0.1 * float(np.median(probe["observable"].sum(1)))))))
    vals = [np.nanmean(reconstruction_metrics(reconstruct(a, model, n_revealed=n, seed=s))["spearman"])
            for s in (0, 1)]
    row = p[(p.embedding == "model") & (p.task == "mask90") & (p.metric == "spearman")].iloc[0]
    assert row.value == pytest.approx(np.mean(vals)) and row["std"] == pytest.approx(np.std(vals, ddof=1))
    with pytest.raises(TfmkitError, match=r"mask rates must be in \[0, 1\)"):
        runners.benchmark_pretraining(model, a, mask_rates=(1.5,))


def test_celltype_max_cells_is_a_seeded_stratified_subsample(pbmc, capsys):
    """--max-cells: the whole benchmark runs on the seeded, label-stratified subset (the same
    numbers as benchmarking that subset directly), says so on stderr and records it."""
    from tfmkit.evaluation.subsample import subsample_cells

    kw = dict(label_key="bulk_labels", batch_key="batch", obsm_keys=["X_pca"], baselines=("pca20",),
              n_seeds=2, probes=("knn",))
    got = runners.benchmark_celltype(pbmc, max_cells=120, seed=3, **kw)
    assert "benchmark celltype: subsampled 120 of 240 cells" in capsys.readouterr().err
    assert (got.n_cells_used == 120).all() and (got.max_cells == 120).all()
    keep = subsample_cells(240, 120, seed=3, labels=pbmc.obs["bulk_labels"].astype(str).to_numpy())
    assert set(pbmc.obs["bulk_labels"].iloc[keep]) == set(pbmc.obs["bulk_labels"])  # every label kept
    ref = runners.benchmark_celltype(pbmc[keep].copy(), **kw)
    cols = ["embedding", "task", "metric", "value", "std", "n_seeds"]
    pd.testing.assert_frame_equal(got[cols], ref[cols])
    again = runners.benchmark_celltype(pbmc, max_cells=120, seed=3, **kw)
    pd.testing.assert_frame_equal(got, again)
    with pytest.raises(TfmkitError, match="--max-cells must be a positive number of cells"):
        runners.benchmark_celltype(pbmc, max_cells=0, **kw)


def test_celltype_seeds_sharing_cells_equal_independent_metrics(pbmc):
    """All cells in every seed: one distance pass per embedding, and the label-shuffle control
    sharing lognorm's pass, give the per-seed metrics of independent celltype_metrics calls."""
    from tfmkit.evaluation import metrics_celltype as MC

    df = runners.benchmark_celltype(pbmc, label_key="bulk_labels", batch_key="batch",
                                    baselines=("lognorm", "random_label_shuffle"), n_seeds=2, probes=())
    counts = pbmc.X
    X = B.baseline_embedding(counts, "lognorm")
    y = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    b = pbmc.obs["batch"].to_numpy()
    for name, labels in (("lognorm", lambda s: y), ("random_label_shuffle", lambda s: B.shuffled_labels(y, s))):
        per_seed = [MC.celltype_metrics(X, labels(s), b, seed=s) for s in (0, 1)]
        rows = df[df.embedding == name].set_index("metric")
        for metric in per_seed[0]:
            vals = [m[metric] for m in per_seed]
            assert rows.loc[metric, "value"] == pytest.approx(np.mean(vals), abs=1e-6), (name, metric)
            assert rows.loc[metric, "std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-6), (name, metric)


@pytest.mark.parametrize("reveal", ["top", "random"])
def test_pretraining_input_tokens_are_bounded_by_the_training_context(pbmc, model, reveal):
    """At mask rate 0.1 a cell would show 90% of its expressed (top) or observable (random)
    genes; the model never reads more tokens than its training context K (32 here)."""
    from tfmkit.data import keys as K
    from tfmkit.inference import context_size

    cap = context_size(model)
    a = pbmc[:24].copy()
    n_expr = np.asarray((a.X > 0).sum(1)).ravel()
    assert cap == 32 and n_expr.min() * 0.9 > cap and a.n_vars * 0.9 > 20 * cap  # the bound binds
    seen = []
    hook = model.module.register_forward_pre_hook(lambda mod, args: seen.append(args[0][K.GENE_IDS].shape))
    try:
        p = runners.benchmark_pretraining(model, a, mask_rates=(0.1,), reveal=reveal, mean_baseline=False)
    finally:
        hook.remove()
    # random: the training rule's zero slots (data.zero_fraction) may round one token over K
    slack = 0 if reveal == "top" else 1
    assert seen and max(t for _, t in seen) <= cap + slack
    assert 0.9 * cap <= p.context_genes.iloc[0] <= cap + slack
    assert (p.n_cells_used == 24).all() and (p.max_cells == 1000).all()
    bigger = runners.benchmark_pretraining(model, a, mask_rates=(0.1,), reveal=reveal, max_context=48,
                                           mean_baseline=False)
    assert cap < bigger.context_genes.iloc[0] <= 48 + slack  # an explicit --max-context overrides the cap
