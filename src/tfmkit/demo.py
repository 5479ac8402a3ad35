"""``tfmkit demo``: the end-to-end main job on bundled real data.

1. pretrain TxFM-tiny on the three Liao 2020 BALF patients (one gene panel per patient);
2. embed two held-out labelled datasets zero-shot (pbmc68k with recovered raw counts, Wu 2020
   T cells) — neither was seen in pretraining;
3. compare the CLS embedding with the ``pca50`` and ``lognorm`` baselines (and a shuffled-label
   control) by kNN label accuracy / macro F1 (k = 10, stratified 5-fold) and the cell-type
   benchmark runner;
4. write ``OUT/report.md``, ``OUT/results.csv`` (long format), ``OUT/loss_curve.png``,
   ``OUT/embedding_<dataset>.png`` and keep the trained model in ``OUT/model``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

#: Pretraining budgets. quick: < 5 min end to end on 2 CPU cores.
BUDGETS = {
    "quick": ["train.steps=300", "train.batch_size=32", "data.n_revealed=256"],
    "full": ["train.steps=2000", "train.batch_size=32", "data.n_revealed=256"],
}

#: Held-out labelled datasets: name -> (label column, obs column of full-transcriptome totals).
EVAL_SETS = {"pbmc68k": ("bulk_labels", "n_counts"), "wu2020": ("cluster_orig", None)}
MIN_CLASS_SIZE = 5  # classes smaller than this cannot be split 5-fold; they are left out


def knn_cv(X: np.ndarray, labels, *, k: int = 10, folds: int = 5, seed: int = 0) -> dict:
    """kNN (k=10) label accuracy and macro F1, stratified ``folds``-fold CV (scikit-learn)."""
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    res = cross_validate(KNeighborsClassifier(n_neighbors=k), X, np.asarray(labels), cv=cv,
                         scoring=("accuracy", "f1_macro"))
    return {"accuracy": res["test_accuracy"], "macro_f1": res["test_f1_macro"]}


def _eval_dataset(name, adata, label_key, model, library_key=None, seed=0) -> tuple[pd.DataFrame, dict]:
    from tfmkit.evaluation.baselines import baseline_embedding, shuffled_labels
    from tfmkit.inference import embed

    counts = adata.obs[label_key].value_counts()
    keep = adata.obs[label_key].isin(counts[counts >= MIN_CLASS_SIZE].index).to_numpy()
    adata = adata[keep].copy()
    embed(adata, model, key="X_tfmkit", seed=seed, library_key=library_key)
    embs = {"tfmkit": adata.obsm["X_tfmkit"]}
    for b in ("pca50", "lognorm"):
        embs[b] = baseline_embedding(adata.X, b, seed=seed)
    labels = adata.obs[label_key].astype(str).to_numpy()
    rows = []
    for ename, X in embs.items():
        for metric, vals in knn_cv(X, labels, seed=seed).items():
            rows.append(dict(dataset=name, embedding=ename, task="knn_5fold", metric=metric,
                             value=float(np.mean(vals)), std=float(np.std(vals)), seed=seed))
    for metric, vals in knn_cv(embs["lognorm"], shuffled_labels(labels, seed), seed=seed).items():
        rows.append(dict(dataset=name, embedding="random_label_shuffle", task="knn_5fold",
                         metric=metric, value=float(np.mean(vals)), std=float(np.std(vals)), seed=seed))
    adata.obsm["X_pca50"] = embs["pca50"]
    return pd.DataFrame(rows), {"adata": adata, "label_key": label_key,
                                "n_dropped": int((~keep).sum())}


def _loss_plot(log_csv: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = pd.read_csv(log_csv)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(log["step"], log["loss"], label="train")
    v = log.dropna(subset=["val_loss"])
    if len(v):
        ax.plot(v["step"], v["val_loss"], "o-", label="held-out cells")
    ax.set_xlabel("step")
    ax.set_ylabel("Poisson loss (TxFM eq. 2)")
    ax.set_title("TxFM-tiny pretraining on BALF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _embedding_plot(adata, label_key: str, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, name in zip(axes, ("X_tfmkit", "X_pca50"), ("TxFM-tiny CLS (zero-shot)", "PCA-50 baseline")):
        tmp = adata.copy()
        sc.pp.neighbors(tmp, use_rep=key, n_neighbors=15, random_state=0)
        sc.tl.umap(tmp, random_state=0)
        xy = tmp.obsm["X_umap"]
        cats = tmp.obs[label_key].astype("category")
        for i, c in enumerate(cats.cat.categories):
            m = (cats == c).to_numpy()
            ax.scatter(xy[m, 0], xy[m, 1], s=6, label=str(c), color=plt.cm.tab20(i % 20))
        ax.set_title(f"{title}: {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(markerscale=2, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _markdown(df: pd.DataFrame, extra: dict, budget: str, train_s: float, cfg) -> str:
    lines = [
        "# tfmkit demo report", "",
        f"Pretrained **TxFM-{cfg.model.preset}** ({cfg.model.depth} blocks, width {cfg.model.dim}, "
        f"K = {cfg.data.n_revealed}) for {cfg.train.steps} steps x {cfg.train.batch_size} cells on the "
        f"bundled Liao 2020 BALF patients ({budget} budget, {train_s:.0f} s of training). "
        "Embeddings of the labelled datasets below are zero-shot: neither dataset was seen in pretraining. "
        "Baselines are computed on the evaluation data itself (PCA is fit on it), which favours them.", "",
        "## kNN label accuracy (k = 10, stratified 5-fold; mean ± std over folds)", "",
    ]
    knn = df[df.task == "knn_5fold"]
    for ds, sub in knn.groupby("dataset", sort=False):
        info = extra[ds]
        lines += [f"### {ds} (label `{info['label_key']}`, {info['adata'].n_obs} cells"
                  + (f", {info['n_dropped']} cells of classes with < {MIN_CLASS_SIZE} cells left out" if info["n_dropped"] else "")
                  + ")", "", "| embedding | accuracy | macro F1 |", "|---|---|---|"]
        for emb, e in sub.groupby("embedding", sort=False):
            a = e[e.metric == "accuracy"].iloc[0]
            f = e[e.metric == "macro_f1"].iloc[0]
            lines.append(f"| {emb} | {a.value:.3f} ± {a['std']:.3f} | {f.value:.3f} ± {f['std']:.3f} |")
        acc = sub[sub.metric == "accuracy"].set_index("embedding")["value"]
        best = acc.drop("random_label_shuffle").idxmax()
        verdict = ("the model is best" if best == "tfmkit" else
                   f"the `{best}` baseline wins ({acc[best]:.3f} vs {acc['tfmkit']:.3f} for the model)")
        lines += ["", f"Reading: {verdict}; chance level (shuffled labels) is {acc['random_label_shuffle']:.3f}.", ""]
    from tfmkit.evaluation.report import format_table

    sections = [
        ("Cell-type benchmark (`tfmkit benchmark celltype`: clustering, silhouette, LISI, probes)",
         ~df.task.isin(["knn_5fold", "gene_recall"]) & ~df.task.str.startswith("mask")),
        ("Gene-gene relationship recall (`tfmkit benchmark genes`, TxFM §B.3; chance ≈ 0.10)",
         df.task == "gene_recall"),
        ("Reconstruction of held-out cells (`tfmkit benchmark pretraining`, GPL §4.5)",
         df.task.str.startswith("mask")),
    ]
    for heading, sel in sections:
        if sel.any():
            lines += [f"## {heading}", ""]
            for ds, sub in df[sel].groupby("dataset", sort=False):
                lines += [format_table(sub.drop(columns=["dataset", "seed"], errors="ignore"), title=ds), ""]
    lines += ["## Files", "", "- `results.csv`: every number above (long format)",
              "- `loss_curve.png`: training and held-out Poisson loss",
              "- `embedding_<dataset>.png`: UMAP of the model embedding vs PCA, coloured by label",
              "- `model/`: the trained model (`tfmkit embed --model OUT/model --input X.h5ad --output Y.h5ad`)",
              "- `train_log.csv`, `config.yaml`: the pretraining run", ""]
    return "\n".join(lines)


def _stage(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]demo[/bold cyan] {msg}")


def run_demo(out: str | Path = "tfmkit-demo", *, quick: bool = False, steps: int | None = None,
             overwrite: bool = False, extra_benchmarks: bool = True) -> Path:
    """Run the demo and return the path of ``report.md``."""
    from tfmkit import datasets
    from tfmkit.config import load_config
    from tfmkit.inference import load_model
    from tfmkit.training import pretrain

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TfmkitError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
        shutil.rmtree(out)
    budget = "quick" if quick else "full"
    overrides = list(BUDGETS[budget]) + ([f"train.steps={steps}"] if steps else [])
    cfg = load_config("txfm_tiny", overrides)
    t0 = time.perf_counter()
    _stage(f"pretraining TxFM-{cfg.model.preset} for {cfg.train.steps} steps on the bundled BALF cells")
    model_dir = pretrain(cfg, out)  # the bundled BALF corpus (QC-passing cells), see configs/txfm_tiny.yaml
    train_s = time.perf_counter() - t0
    model = load_model(model_dir)
    frames, extra = [], {}
    loaders = {"pbmc68k": datasets.load_pbmc68k, "wu2020": datasets.load_wu2020}
    for name, (label_key, library_key) in EVAL_SETS.items():
        _stage(f"embedding {name} zero-shot and benchmarking against baselines")
        df, info = _eval_dataset(name, loaders[name](), label_key, model, library_key)
        frames.append(df)
        extra[name] = info
        if extra_benchmarks:
            frames.append(_celltype_rows(name, info, quick))
        _embedding_plot(info["adata"], label_key, out / f"embedding_{name}.png", name)
    if extra_benchmarks:
        _stage("gene-relationship recall and held-out reconstruction")
        frames += [_gene_rows(model, quick), _pretraining_rows(model, quick)]
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(out / "results.csv", index=False)
    _loss_plot(out / "train_log.csv", out / "loss_curve.png")
    report = out / "report.md"
    report.write_text(_markdown(results, extra, budget, train_s, cfg))
    return report


def _celltype_rows(name: str, info: dict, quick: bool) -> pd.DataFrame:
    """Cell-type benchmark rows from the shared runner (model + baselines), tagged by dataset."""
    from tfmkit.evaluation.runners import benchmark_celltype

    df = benchmark_celltype(info["adata"], label_key=info["label_key"], obsm_keys=["X_tfmkit"],
                            n_seeds=2 if quick else 5,
                            probes=("linear", "knn") if quick else ("linear", "mlp", "knn"))
    df = df.copy()
    df.insert(0, "dataset", name)
    return df


def _gene_rows(model, quick: bool) -> pd.DataFrame:
    """Gene-gene relationship recall of encoder tokens / decoder weights vs PCA loadings of the
    pretraining corpus and a gene-label shuffle (TxFM §B.3)."""
    from tfmkit import datasets
    from tfmkit.evaluation.runners import benchmark_genes

    dbs = ("corum", "hallmark") if quick else ("corum", "hallmark", "canonical_pathways")
    df = benchmark_genes(model, adata=datasets.load_balf(qc=True), databases=dbs,
                         n_null_draws=1 if quick else 3)
    df.insert(0, "dataset", "balf (genes)")
    return df


def _pretraining_rows(model, quick: bool) -> pd.DataFrame:
    """Held-out reconstruction quality on pbmc68k (never seen in pretraining) vs a gene-mean prior."""
    from tfmkit import datasets
    from tfmkit.evaluation.runners import benchmark_pretraining

    df = benchmark_pretraining(model, datasets.load_pbmc68k(), library_key="n_counts",
                               mask_rates=(0.9,) if quick else (0.5, 0.9))
    df.insert(0, "dataset", "pbmc68k (reconstruction)")
    return df
