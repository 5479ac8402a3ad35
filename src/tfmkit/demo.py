"""``tfmkit demo``: the end-to-end main job on bundled real data.

1. pretrain TxFM-tiny on the three Liao 2020 BALF patients (one gene panel per patient);
2. embed two held-out labelled datasets zero-shot (pbmc68k with recovered raw counts, Wu 2020
   T cells) — neither was seen in pretraining;
3. compare the CLS embedding with the ``pca50`` and ``lognorm`` baselines (and a shuffled-label
   control) with the registered benchmarks (:data:`tfmkit.evaluation.benchmark_registry.BENCHMARKS`):
   kNN label accuracy / macro F1 (k = 10, stratified 5-fold) and the cell-type benchmark, plus
   gene-relationship recall and held-out reconstruction;
4. write ``OUT/report.md``, ``OUT/results.csv`` (long format), ``OUT/loss_curve.png``,
   ``OUT/embedding_<dataset>.png`` and keep the trained model in ``OUT/model``.

Budgets: ``full`` (2,000 steps), ``quick`` (300 steps, < 5 min on 2 CPU cores) and ``tiny`` (3
steps on subsampled evaluation cells with cheap PCA plots; a smoke test of the whole path in
well under a minute, its numbers mean nothing). Everything is written to a temporary folder
inside ``OUT`` and moved into place at the end, so a failed demo leaves no partial output;
``overwrite`` replaces only the demo's own files and refuses when ``OUT`` holds anything else.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

#: Pretraining budgets. quick: < 5 min end to end on 2 CPU cores; tiny: a smoke test.
BUDGETS = {
    "tiny": ["train.steps=3", "train.batch_size=8", "data.n_revealed=32", "train.val_every=0"],
    "quick": ["train.steps=300", "train.batch_size=32", "data.n_revealed=256"],
    "full": ["train.steps=2000", "train.batch_size=32", "data.n_revealed=256"],
}


@dataclass(frozen=True)
class EvalBudget:
    """How much evaluation a budget runs (``None`` = all cells)."""

    max_cells: int | None          # evaluation cells per labelled dataset (seeded subsample)
    celltype_seeds: int            # subsamples of the cell-type benchmark
    probes: tuple[str, ...]
    baselines: tuple[str, ...] | None  # of the cell-type benchmark (None = the runner's default)
    databases: tuple[str, ...]     # gene-set databases of the gene recall
    n_null_draws: int
    n_null_pairs: int
    gene_cells: int | None         # BALF cells for the PCA-loadings gene baseline
    mask_rates: tuple[float, ...]
    recon_cells: int | None        # pbmc68k cells for held-out reconstruction
    umap: bool                     # UMAP plots (else cheap 2-D PCA plots)


EVAL_BUDGETS = {
    "tiny": EvalBudget(240, 1, ("knn",), ("lognorm", "pca50", "random_label_shuffle"), ("hallmark",),
                       1, 5_000, 300, (0.9,), 48, False),
    "quick": EvalBudget(None, 2, ("linear", "knn"), None, ("corum", "hallmark"), 1, 100_000, None,
                        (0.9,), None, True),
    "full": EvalBudget(None, 5, ("linear", "mlp", "knn"), None, ("corum", "hallmark", "canonical_pathways"),
                       3, 100_000, None, (0.5, 0.9), None, True),
}

#: Held-out labelled datasets: name -> (label column, obs column of full-transcriptome totals).
EVAL_SETS = {"pbmc68k": ("bulk_labels", "n_counts"), "wu2020": ("cluster_orig", None)}
MIN_CLASS_SIZE = 5  # classes smaller than this cannot be split 5-fold; they are left out
#: Everything the demo writes into OUT (names or glob patterns); nothing else is ever removed.
ARTEFACTS = ("report.md", "results.csv", "loss_curve.png", "embedding_*.png", "model",
             "train_log.csv", "config.yaml", ".tfmkit-demo-partial-*")


def _is_artefact(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in ARTEFACTS)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, or holds files unless ``overwrite``; with
    ``overwrite`` refuse when ``out`` holds anything the demo did not write."""
    if out.exists() and not out.is_dir():
        raise TfmkitError(f"--out {out} exists and is not a directory; choose another --out")
    entries = sorted(e.name for e in out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        raise TfmkitError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    foreign = [e for e in entries if not _is_artefact(e)]
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise TfmkitError(f"{out} holds files the demo did not write ({', '.join(foreign[:5])}{more}); "
                          "--overwrite only replaces the demo's own files: choose another --out")


def _eval_dataset(name, adata, label_key, model, library_key=None, seed=0,
                  max_cells: int | None = None) -> tuple[pd.DataFrame, dict]:
    from tfmkit.evaluation.baselines import baseline_embedding
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS
    from tfmkit.inference import embed

    if max_cells is not None and adata.n_obs > max_cells:
        idx = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[idx].copy()
    counts = adata.obs[label_key].value_counts()
    keep = adata.obs[label_key].isin(counts[counts >= MIN_CLASS_SIZE].index).to_numpy()
    adata = adata[keep].copy()
    # pbmc68k keeps 765 HVGs of the full transcriptome (library sizes from obs): a known low
    # vocabulary coverage, so the coverage check is told to let it through
    embed(adata, model, key="X_tfmkit", seed=seed, library_key=library_key, allow_low_coverage=True)
    embs = {"tfmkit": adata.obsm["X_tfmkit"]}
    for b in ("pca50", "lognorm"):
        embs[b] = baseline_embedding(adata.X, b, seed=seed)
    labels = adata.obs[label_key].astype(str).to_numpy()
    df = BENCHMARKS.get("knn").run(embs, labels, seed=seed, shuffle_control="lognorm")
    df.insert(0, "dataset", name)
    df["seed"] = seed
    adata.obsm["X_pca50"] = embs["pca50"]
    return df, {"adata": adata, "label_key": label_key, "n_dropped": int((~keep).sum())}


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


def _embedding_plot(adata, label_key: str, png: Path, title: str, *, umap: bool = True) -> None:
    """Model embedding beside PCA-50, coloured by label: UMAP (scanpy) or, with ``umap=False``,
    the first two principal components of each embedding (no numba compilation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, name in zip(axes, ("X_tfmkit", "X_pca50"), ("TxFM-tiny CLS (zero-shot)", "PCA-50 baseline")):
        if umap:
            import scanpy as sc

            tmp = adata.copy()
            sc.pp.neighbors(tmp, use_rep=key, n_neighbors=15, random_state=0)
            sc.tl.umap(tmp, random_state=0)
            xy = tmp.obsm["X_umap"]
        else:
            from sklearn.decomposition import PCA

            xy = PCA(2, random_state=0).fit_transform(np.asarray(adata.obsm[key], dtype=np.float64))
        cats = adata.obs[label_key].astype("category")
        for i, c in enumerate(cats.cat.categories):
            m = (cats == c).to_numpy()
            ax.scatter(xy[m, 0], xy[m, 1], s=6, label=str(c), color=plt.cm.tab20(i % 20))
        ax.set_title(f"{title}: {name}{'' if umap else ' (PCA 1-2)'}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(markerscale=2, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _markdown(df: pd.DataFrame, extra: dict, budget: str, train_s: float, cfg) -> str:
    from tfmkit.evaluation.metric_registry import higher_is_better

    lines = [
        "# tfmkit demo report", "",
        f"Pretrained **TxFM-{cfg.model.preset}** ({cfg.model.depth} blocks, width {cfg.model.dim}, "
        f"K = {cfg.data.n_revealed}) for {cfg.train.steps} steps x {cfg.train.batch_size} cells on the "
        f"bundled Liao 2020 BALF patients ({budget} budget, {train_s:.0f} s of training). "
        "Embeddings of the labelled datasets below are zero-shot: neither dataset was seen in pretraining. "
        "Baselines are computed on the evaluation data itself (PCA is fit on it), which favours them."
        + (" **Tiny budget: a smoke test of the pipeline on subsampled cells; the numbers mean "
           "nothing.**" if budget == "tiny" else ""), "",
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
        models = acc.drop("random_label_shuffle")
        best = models.idxmax() if higher_is_better("accuracy") else models.idxmin()
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


def run_demo(out: str | Path = "tfmkit-demo", *, quick: bool = False, tiny: bool = False,
             steps: int | None = None, overwrite: bool = False, extra_benchmarks: bool = True) -> Path:
    """Run the demo into ``out`` and return the path of ``report.md``.

    ``quick`` / ``tiny`` pick the budget (see module doc; default ``full``); ``steps`` replaces
    its training steps; ``extra_benchmarks=False`` keeps only the kNN comparison. ``out`` must
    be new or empty; with ``overwrite`` an earlier demo's files are replaced (and nothing else:
    anything the demo did not write makes it refuse). Checks run before any work, and all
    outputs appear only when the demo succeeds.
    """
    from tfmkit import datasets
    from tfmkit.config import load_config
    from tfmkit.inference import load_model
    from tfmkit.training import pretrain

    out = Path(out)
    check_out(out, overwrite)
    budget = "tiny" if tiny else "quick" if quick else "full"
    ev = EVAL_BUDGETS[budget]
    overrides = list(BUDGETS[budget]) + ([f"train.steps={steps}"] if steps else [])
    cfg = load_config("txfm_tiny", overrides)
    created = not out.exists()
    work = out / f".tfmkit-demo-partial-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        _stage(f"pretraining TxFM-{cfg.model.preset} for {cfg.train.steps} steps on the bundled BALF cells")
        model_dir = pretrain(cfg, work)  # the bundled BALF corpus (QC-passing cells), see configs/txfm_tiny.yaml
        train_s = time.perf_counter() - t0
        model = load_model(model_dir)
        frames, extra = [], {}
        loaders = {"pbmc68k": datasets.load_pbmc68k, "wu2020": datasets.load_wu2020}
        for name, (label_key, library_key) in EVAL_SETS.items():
            _stage(f"embedding {name} zero-shot and benchmarking against baselines")
            df, info = _eval_dataset(name, loaders[name](), label_key, model, library_key,
                                     max_cells=ev.max_cells)
            frames.append(df)
            extra[name] = info
            if extra_benchmarks:
                frames.append(_celltype_rows(name, info, ev))
            _embedding_plot(info["adata"], label_key, work / f"embedding_{name}.png", name, umap=ev.umap)
        if extra_benchmarks:
            _stage("gene-relationship recall and held-out reconstruction")
            frames += [_gene_rows(model, ev), _pretraining_rows(model, ev)]
        results = pd.concat(frames, ignore_index=True)
        results.to_csv(work / "results.csv", index=False)
        _loss_plot(work / "train_log.csv", work / "loss_curve.png")
        (work / "report.md").write_text(_markdown(results, extra, budget, train_s, cfg))
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return out / "report.md"


def _publish(work: Path, out: Path) -> None:
    """Replace the demo's earlier files in ``out`` by the new ones from ``work``."""
    for old in out.iterdir():
        if old != work and _is_artefact(old.name):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for new in work.iterdir():
        new.rename(out / new.name)
    work.rmdir()


def _celltype_rows(name: str, info: dict, ev: EvalBudget) -> pd.DataFrame:
    """Cell-type benchmark rows from the registered runner (model + baselines), tagged by dataset."""
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS

    kw = {} if ev.baselines is None else {"baselines": ev.baselines}
    df = BENCHMARKS.get("celltype").run(info["adata"], label_key=info["label_key"],
                                        obsm_keys=["X_tfmkit"], n_seeds=ev.celltype_seeds,
                                        probes=ev.probes, **kw)
    df = df.copy()
    df.insert(0, "dataset", name)
    return df


def _gene_rows(model, ev: EvalBudget) -> pd.DataFrame:
    """Gene-gene relationship recall of encoder tokens / decoder weights vs PCA loadings of the
    pretraining corpus and a gene-label shuffle (TxFM §B.3)."""
    from tfmkit import datasets
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS

    balf = datasets.load_balf(qc=True)
    if ev.gene_cells is not None and balf.n_obs > ev.gene_cells:
        balf = balf[np.sort(np.random.default_rng(0).choice(balf.n_obs, ev.gene_cells, replace=False))].copy()
    df = BENCHMARKS.get("genes").run(model, adata=balf, databases=ev.databases,
                                     n_null_draws=ev.n_null_draws, n_null_pairs=ev.n_null_pairs)
    df.insert(0, "dataset", "balf (genes)")
    return df


def _pretraining_rows(model, ev: EvalBudget) -> pd.DataFrame:
    """Held-out reconstruction quality on pbmc68k (never seen in pretraining) vs a gene-mean prior."""
    from tfmkit import datasets
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS

    pbmc = datasets.load_pbmc68k()
    if ev.recon_cells is not None:
        pbmc = pbmc[: ev.recon_cells].copy()
    df = BENCHMARKS.get("pretraining").run(model, pbmc, library_key="n_counts", mask_rates=ev.mask_rates,
                                           allow_low_coverage=True)  # 765 HVGs, see _eval_dataset
    df.insert(0, "dataset", "pbmc68k (reconstruction)")
    return df
