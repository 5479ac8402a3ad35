"""The demo's report: ``report.md`` text and its two kinds of plot (used by :mod:`tfmkit.demo`).

Conventions of the report: one name per embedding in every table and in ``results.csv``
(``tfmkit_zero_shot``, ``tfmkit_ssl_adapted``, ``tfmkit_random_init``, ``pca50``, ``lognorm``,
``scvi``, ``depth_only_control``, ``random_label_shuffle``); one kNN protocol (k = 10, stratified
5-fold, CV seed 0); model rows are mean ± sd over training seeds when there are several.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Explanation of the Poisson loss printed under the loss curve and the reconstruction table.
POISSON_NOTE = (
    "The Poisson loss is TxFM eq. 2 without the constant log k!: the mean over observable genes "
    "of exp(x̂) − x̂·exp(x), with x = log1p(L·count/library) the target and x̂ the prediction. "
    "Since exp(x) = 1 + L·count/library, it is the Poisson negative log-likelihood of that "
    "normalised count at rate exp(x̂) minus a data-only constant. Its minimum over x̂ (at x̂ = x) "
    "is exp(x)·(1 − x), negative as soon as x > 1, so the loss is **negative, and lower is "
    "better**; its scale grows with L (1e5 here) and with the share of expressed genes, so compare "
    "it only between runs with the same L and the same cells.")

DISPLAY = {"tfmkit_zero_shot": "TxFM zero-shot", "tfmkit_ssl_adapted": "TxFM SSL-adapted",
           "tfmkit_target_scratch": "TxFM from scratch on these cells",
           "tfmkit_random_init": "TxFM random init", "pca50": "PCA-50", "lognorm": "lognorm (all genes)",
           "scvi": "scVI", "depth_only_control": "depth only", "random_label_shuffle": "shuffled labels"}


def loss_plot(log_csv: Path, png: Path) -> None:
    """Training and held-out Poisson loss of the kept run."""
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
    ax.set_ylabel("Poisson loss, TxFM eq. 2 (lower is better; < 0 is normal)")
    ax.set_title("TxFM-tiny pretraining on BALF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def palette(n: int) -> list:
    """``n`` distinguishable colours: scanpy's 20-, 28- or 102-colour palettes (no colour is
    reused below 103 classes, unlike cycling ``tab20``)."""
    from scanpy.plotting import palettes

    for pal in (palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(pal):
            return list(pal[:n])
    return [palettes.default_102[i % 102] for i in range(n)]


def embedding_plot(adata, label_key: str, png: Path, title: str, *, keys, umap: bool = True) -> None:
    """One panel per embedding in ``keys`` (``adata.obsm``), coloured by label: UMAP (scanpy) or,
    with ``umap=False``, the first two principal components (no numba compilation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys) + 1.5, 5), squeeze=False)
    cats = adata.obs[label_key].astype("category")
    colours = palette(len(cats.cat.categories))
    for ax, key in zip(axes[0], keys):
        if umap:
            import scanpy as sc

            tmp = adata.copy()
            sc.pp.neighbors(tmp, use_rep=key, n_neighbors=15, random_state=0)
            sc.tl.umap(tmp, random_state=0)
            xy = tmp.obsm["X_umap"]
        else:
            from sklearn.decomposition import PCA

            xy = PCA(2, random_state=0).fit_transform(np.asarray(adata.obsm[key], dtype=np.float64))
        for i, c in enumerate(cats.cat.categories):
            m = (cats == c).to_numpy()
            ax.scatter(xy[m, 0], xy[m, 1], s=6, label=str(c), color=colours[i])
        ax.set_title(f"{title}: {DISPLAY.get(key, key)}{'' if umap else ' (PCA 1-2)'}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(markerscale=2, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _cell(values: pd.Series, fold_sd: pd.Series | None) -> str:
    """``mean ± sd`` over training seeds (several), or ``value ± fold sd`` (one fit)."""
    v = values.dropna()
    if v.empty:
        return "—"
    if len(v) > 1:
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
    sd = None if fold_sd is None or fold_sd.dropna().empty else float(fold_sd.dropna().iloc[0])
    return f"{v.iloc[0]:.3f}" + (f" ± {sd:.3f}†" if sd is not None else "")


def knn_table(df: pd.DataFrame, dataset: str) -> tuple[list[str], pd.Series]:
    """Markdown rows of one dataset's kNN + depth-diagnostic table; returns also the mean kNN
    accuracy per embedding."""
    sub = df[df.dataset == dataset]
    knn = sub[sub.task == "knn_5fold"]
    diag = sub[sub.task == "depth_diagnostic"]
    lines = ["| embedding | name in results.csv | kNN accuracy | kNN macro F1 | "
             "abs Spearman(PC1, genes/cell) | training seeds |", "|---|---|---|---|---|---|"]
    acc = {}
    for emb in dict.fromkeys(knn.embedding):
        a = knn[(knn.embedding == emb) & (knn.metric == "accuracy")]
        f = knn[(knn.embedding == emb) & (knn.metric == "macro_f1")]
        d = diag[diag.embedding == emb]["value"]
        seeds = a["train_seed"].dropna()
        acc[emb] = float(a["value"].mean())
        lines.append(f"| {DISPLAY.get(emb, emb)} | `{emb}` | {_cell(a['value'], a.get('std'))} | "
                     f"{_cell(f['value'], f.get('std'))} | {_cell(d, None) if len(d) else '—'} | "
                     f"{len(seeds) if len(seeds) else '— (fit on these cells)'} |")
    return lines, pd.Series(acc)


def markdown(df: pd.DataFrame, extra: dict, budget: str, timing: dict, cfg, ev) -> str:
    """The whole ``report.md``."""
    from tfmkit.evaluation.report import format_table

    d, m, t = cfg.data, cfg.model, cfg.train
    zf = getattr(d, "zero_fraction", 0.0)
    reveal = (f"expressed genes first, up to K = {d.n_revealed}"
              + (f", plus {zf:.0%} of the tokens given to observable zero genes" if zf else "")
              if d.expressed_only else f"K = {d.n_revealed} of all observable genes, uniformly (TxFM paper)")
    seeds = ev.train_seeds
    train_s = ", ".join(f"{s:.0f}" for s in timing["train_s"])
    lines = [
        "# tfmkit demo report", "",
        f"Pretrained **TxFM-{m.preset}** ({m.depth} blocks, width {m.dim}; reveal: {reveal}; "
        f"gene tokens {'normalised (gene_norm)' if getattr(m, 'gene_norm', False) else 'as in TxFM'}) "
        f"for {t.steps} steps x {t.batch_size} cells on the bundled Liao 2020 BALF patients "
        f"({budget} budget, training seeds {list(seeds)}, {train_s} s of training per seed, "
        f"{timing['total_s']:.0f} s end to end). Cells are embedded with `{ev.pooling}` pooling and a "
        "reveal seeded per cell (a cell's embedding does not depend on its batch).", "",
        "- **TxFM zero-shot**: neither labelled dataset was seen in pretraining.",
        f"- **TxFM SSL-adapted**: the pretrained model trained {ev.ssl_steps} more steps with its own "
        "objective on the evaluation cells (no labels; TxFM Table 3 setting).",
        *([f"- **TxFM from scratch on these cells**: the same architecture and objective trained "
           f"{ev.scratch_steps} steps on the evaluation cells only (no pretraining, no labels)."]
          if getattr(ev, "scratch_steps", 0) else []),
        *([f"- **Quick budget**: the SSL-adapted and from-scratch rows are computed on "
           f"{', '.join(ev.adapt_on)} only, and gene-relationship recall and held-out reconstruction "
           "are left out (the full demo and `tfmkit benchmark genes|pretraining` run them), and the "
           "plots show principal components, not UMAP; this keeps the quick demo under 5 minutes on "
           "2 idle CPU cores."]
          if getattr(ev, "adapt_on", None) is not None else []),
        "- **TxFM random init**: the same architecture and reveal rule, untrained.",
        "- **PCA-50, lognorm, scVI and depth only are fit on the evaluation cells themselves** "
        "(PCA sees exactly the cells it embeds, without labels), which favours them over zero-shot.",
        "- **depth only**: kNN on two numbers per cell, log genes/cell and log total counts; an "
        "embedding that does not beat it has learned sequencing depth, not cell identity.",
        "- **shuffled labels**: lognorm scored against permuted labels (chance level).",
        "- abs Spearman(PC1, genes/cell): rank correlation of the embedding's first principal "
        "component with each cell's number of expressed genes (1 = the main axis is depth).", "",
        (f"Model rows are mean ± sd over {len(seeds)} training seeds." if len(seeds) > 1 else
         f"**One training seed ({budget} budget)**: ± marked † is the sd over the 5 CV folds, not over "
         "training seeds (training-seed noise is ±0.02–0.04 here, larger than the CV noise); the full "
         "demo reports mean ± sd over 3 training seeds.")
        + (" **Tiny budget: a smoke test of the pipeline on subsampled cells; the numbers mean nothing.**"
           if budget == "tiny" else ""), "",
        "## kNN label accuracy (one protocol: k = 10, stratified 5-fold, CV seed 0)", "",
    ]
    for ds, info in extra.items():
        rows, acc = knn_table(df, ds)
        lines += [f"### {ds} (label `{info['label_key']}`, {info['adata'].n_obs} cells"
                  + (f", {info['n_dropped']} cells of classes with < 5 cells left out" if info["n_dropped"] else "")
                  + ")", ""] + rows
        models = acc.drop([k for k in ("random_label_shuffle", "depth_only_control") if k in acc])
        best = models.idxmax()
        z = acc.get("tfmkit_zero_shot", np.nan)
        lines += ["", f"Reading: best is `{best}` ({acc[best]:.3f}); zero-shot {z:.3f} vs depth only "
                  f"{acc.get('depth_only_control', np.nan):.3f} and PCA-50 {acc.get('pca50', np.nan):.3f}"
                  + (f"; SSL-adapted {acc['tfmkit_ssl_adapted']:.3f}" if "tfmkit_ssl_adapted" in acc else "")
                  + (f"; from scratch on these cells {acc['tfmkit_target_scratch']:.3f}"
                     if "tfmkit_target_scratch" in acc else "")
                  + f"; chance (shuffled labels) {acc.get('random_label_shuffle', np.nan):.3f}.", ""]
    sections = [
        ("Cell-type benchmark (`tfmkit benchmark celltype`: probes, clustering, silhouette, LISI; "
         "seed-0 models; baselines fit on the evaluation cells)",
         ~df.task.isin(["knn_5fold", "gene_recall", "depth_diagnostic"]) & ~df.task.str.startswith("mask")),
        ("Gene-gene relationship recall (`tfmkit benchmark genes`, TxFM §B.3; chance ≈ 0.10)",
         df.task == "gene_recall"),
        ("Reconstruction of held-out cells (`tfmkit benchmark pretraining`, GPL §4.5; `gene_mean` "
         "predicts each cell from the mean of the *other* cells)", df.task.str.startswith("mask")),
    ]
    for heading, sel in sections:
        if sel.any():
            lines += [f"## {heading}", ""]
            for ds, sub in df[sel].groupby("dataset", sort=False):
                lines += [format_table(sub.drop(columns=["dataset", "seed", "train_seed"], errors="ignore"),
                                       title=ds), ""]
            if heading.startswith("Reconstruction"):
                lines += [POISSON_NOTE, ""]
    lines += ["## Files", "", "- `results.csv`: every number above (long format; `train_seed` on model rows)",
              "- `loss_curve.png`: training and held-out Poisson loss (see the note on its sign above)",
              f"- `embedding_<dataset>.png`: {'UMAP' if ev.umap else 'first two principal components'} of "
              "zero-shot, SSL-adapted and PCA-50 embeddings, coloured by label",
              "- `model/`: the seed-0 model (`tfmkit embed --model OUT/model --input X.h5ad --output Y.h5ad`)",
              "- `train_log.csv`, `config.yaml`: its pretraining run", ""]
    return "\n".join(lines)
