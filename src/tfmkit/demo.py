"""``tfmkit demo``: the end-to-end main job on bundled real data.

1. pretrain TxFM-tiny (``configs/txfm_tiny.yaml``) on the three Liao 2020 BALF patients, once
   per training seed, plus the same architecture at random initialisation;
2. embed two held-out labelled datasets (pbmc68k with recovered raw counts, Wu 2020 T cells):
   zero-shot (neither was seen in pretraining), after SSL adaptation (the model's own
   objective continued on the target cells, :func:`tfmkit.finetune.ssl.finetune_ssl`; no labels)
   and, as the alternative, the same architecture trained from scratch on the target cells;
3. compare them with baselines fit on the evaluation cells themselves (``pca50``, ``lognorm`` of
   all genes, ``scvi`` when installed), a depth-only control (log genes/cell, log total counts)
   and a shuffled-label control, all with one kNN protocol (k = 10, stratified 5-fold), plus the
   diagnostic ``|Spearman(embedding PC1, genes per cell)|``; the cell-type benchmark (probes,
   clustering), gene-relationship recall and held-out reconstruction for the seed-0 model;
4. write ``OUT/report.md`` (:mod:`tfmkit.demo_report`), ``OUT/results.csv`` (long format, a
   ``train_seed`` column), ``OUT/loss_curve.png``, ``OUT/embedding_<dataset>.png`` and keep the
   seed-0 model in ``OUT/model``.

Budgets: ``full`` (2,000 steps, 3 training seeds, 300 SSL and 300 from-scratch steps per target),
``quick`` (300 steps, 1 seed, 80 SSL and 120 from-scratch steps on pbmc68k only, no gene
benchmarks, PCA plots; under 5 min on 2 idle CPU cores: see the README) and ``tiny`` (3 steps on subsampled evaluation cells
with cheap PCA plots; a smoke test of the whole path, its numbers mean nothing). Everything is
written to a temporary folder inside ``OUT`` and moved into place at the end, so a failed demo
leaves no partial output; ``overwrite`` replaces only the demo's own files and refuses when
``OUT`` holds anything else.
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

#: Pretraining budgets (on top of configs/txfm_tiny.yaml). quick: about 5 min end to end on 2 idle CPU cores;
#: tiny: a smoke test.
BUDGETS = {
    "tiny": ["train.steps=3", "train.batch_size=8", "data.n_revealed=32", "train.val_every=0"],
    "quick": ["train.steps=300", "train.batch_size=32"],
    "full": ["train.steps=2000", "train.batch_size=32"],
}


@dataclass(frozen=True)
class EvalBudget:
    """How much evaluation a budget runs (``None`` = all cells)."""

    max_cells: int | None          # evaluation cells per labelled dataset (seeded subsample)
    train_seeds: tuple[int, ...]   # pretraining seeds (headline numbers: mean ± sd over them)
    ssl_steps: int                 # SSL adaptation steps on each target dataset (0 = none)
    celltype_seeds: int            # subsamples of the cell-type benchmark
    probes: tuple[str, ...]        # probes of the cell-type benchmark (kNN has its own table)
    baselines: tuple[str, ...] | None  # of the cell-type benchmark (None = the runner's default)
    databases: tuple[str, ...]     # gene-set databases of the gene recall
    n_null_draws: int
    n_null_pairs: int
    gene_cells: int | None         # BALF cells for the PCA-loadings gene baseline
    mask_rates: tuple[float, ...]
    recon_cells: int | None        # pbmc68k cells for held-out reconstruction
    umap: bool                     # UMAP plots (else cheap 2-D PCA plots)
    scvi_epochs: int = 100         # scVI training epochs (only when scvi-tools is installed)
    pooling: str = "mean"          # cell embedding pooling (tfmkit.embed); mean beat CLS on
                                   # pbmc68k in every cell of the issue-12 ablation (docs/science.md)
    scratch_steps: int = 0         # steps of the same architecture trained from scratch on the
                                   # evaluation cells (no labels; 0 = no such row)
    adapt_on: tuple[str, ...] | None = None  # datasets given the SSL / from-scratch rows (None = all)
    gene_benchmarks: bool = True   # gene-relationship recall and held-out reconstruction


EVAL_BUDGETS = {
    "tiny": EvalBudget(240, (0,), 2, 1, ("linear",), ("lognorm", "pca50", "random_label_shuffle"),
                       ("hallmark",), 1, 5_000, 300, (0.9,), 48, False, scvi_epochs=2, scratch_steps=2),
    # quick: <= 5 min on 2 idle cores (issue 12). Measured idle: 436 s with both adaptation rows on
    # both datasets and the gene benchmarks; Wu 2020's adaptation (193 cells, every embedding near
    # chance) cost 123 s and the gene benchmarks 26 s, so quick leaves them to the full demo; 304 s
    # without them, of which 13 s compiling UMAP: quick plots the first two principal components
    # (299 s); 80 SSL and 120 from-scratch steps (not 100 / 150) leave a margin for a busier machine.
    "quick": EvalBudget(None, (0,), 80, 2, ("linear",), None, ("corum", "hallmark"), 1, 100_000,
                        None, (0.9,), None, False, scvi_epochs=50, scratch_steps=120,
                        adapt_on=("pbmc68k",), gene_benchmarks=False),
    "full": EvalBudget(None, (0, 1, 2), 300, 5, ("linear", "mlp"), None,
                       ("corum", "hallmark", "canonical_pathways"), 3, 100_000, None, (0.5, 0.9),
                       None, True, scratch_steps=300),
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


#: Embedding names, the same in every table and in ``results.csv``.
ZERO_SHOT, SSL, RANDOM_INIT = "tfmkit_zero_shot", "tfmkit_ssl_adapted", "tfmkit_random_init"
TARGET_SCRATCH = "tfmkit_target_scratch"
DEPTH_CONTROL, SHUFFLE = "depth_only_control", "random_label_shuffle"
MODEL_ROWS = (ZERO_SHOT, SSL, TARGET_SCRATCH, RANDOM_INIT)


def _eval_cells(adata, label_key: str, seed: int, max_cells: int | None):
    """The evaluation cells: a seeded subsample (``max_cells``) without classes of fewer than
    ``MIN_CLASS_SIZE`` cells (they cannot be split 5-fold); returns ``(adata, n_dropped)``."""
    if max_cells is not None and adata.n_obs > max_cells:
        idx = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[idx].copy()
    counts = adata.obs[label_key].value_counts()
    keep = adata.obs[label_key].isin(counts[counts >= MIN_CLASS_SIZE].index).to_numpy()
    return adata[keep].copy(), int((~keep).sum())


def depth_features(adata, library_key: str | None = None) -> np.ndarray:
    """``(N, 2)`` depth-only control features: log1p genes per cell and log1p total counts
    (``obs[library_key]`` when given, e.g. pbmc68k's full-transcriptome ``n_counts``)."""
    import scipy.sparse as sp

    X = sp.csr_matrix(adata.X)
    genes = np.diff(X.indptr).astype(np.float64)  # (N,)
    total = (adata.obs[library_key].to_numpy(np.float64) if library_key
             else np.asarray(X.sum(1), dtype=np.float64).ravel())  # (N,)
    return np.column_stack([np.log1p(genes), np.log1p(total)]).astype(np.float32)


def pc1_depth_spearman(E: np.ndarray, genes_per_cell: np.ndarray) -> float:
    """``|Spearman(PC1 of E, genes per cell)|``: how much of the embedding's main axis is
    sequencing depth (1 = entirely)."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    E = np.asarray(E, dtype=np.float64)
    if E.shape[1] < 2 or np.allclose(E.std(0), 0):
        return float("nan")
    pc1 = PCA(1, random_state=0).fit_transform(E - E.mean(0))[:, 0]
    return float(abs(spearmanr(pc1, genes_per_cell).statistic))


def _scvi_embedding(adata, seed: int, epochs: int) -> np.ndarray | None:
    """scVI latent space fit on the evaluation cells (optional ``[baselines]`` extra,
    :mod:`tfmkit.evaluation.scvi_baseline`); ``None`` when scvi-tools is not installed."""
    from tfmkit.evaluation.scvi_baseline import scvi_available, scvi_embedding

    return scvi_embedding(adata.X, max_epochs=epochs, seed=seed) if scvi_available() else None


def _model_embedding(adata, model, library_key, pooling: str) -> np.ndarray:
    from tfmkit.inference import embed

    tmp = adata.copy()
    # pbmc68k keeps 765 HVGs of the full transcriptome (library sizes from obs): a known low
    # vocabulary coverage, so the coverage check is told to let it through
    embed(tmp, model, key="X", pooling=pooling, library_key=library_key, allow_low_coverage=True)
    return tmp.obsm["X"]


def _knn_rows(name: str, embs: dict, labels, genes, train_seed) -> list[pd.DataFrame]:
    """kNN rows (the one protocol: k = 10, stratified 5-fold with CV seed 0, mean ± sd over
    folds) and the depth diagnostic of every embedding in ``embs``."""
    from tfmkit.evaluation.benchmark_registry import BENCHMARKS

    shuffle = "lognorm" if "lognorm" in embs else None
    df = BENCHMARKS.get("knn").run(embs, labels, seed=0, shuffle_control=shuffle)
    diag = pd.DataFrame([{"embedding": e, "task": "depth_diagnostic",
                          "metric": "abs_spearman_pc1_genes_per_cell", "value": pc1_depth_spearman(X, genes)}
                         for e, X in embs.items() if e != DEPTH_CONTROL])
    out = pd.concat([df, diag], ignore_index=True)
    out.insert(0, "dataset", name)
    out["train_seed"] = train_seed
    return [out]


def _eval_dataset(name, adata, label_key, runs, library_key, ev, work: Path) -> tuple[pd.DataFrame, dict]:
    """Every row of one labelled dataset: the model zero-shot, SSL-adapted and at random
    initialisation (one per training seed in ``runs``), the baselines fit on these cells
    (PCA-50, lognorm of all genes, scVI when installed), the depth-only control and the
    shuffled-label control (via the ``lognorm`` baseline)."""
    from tfmkit.evaluation.baselines import baseline_embedding
    from tfmkit.inference import load_model

    adata, n_dropped = _eval_cells(adata, label_key, 0, ev.max_cells)
    labels = adata.obs[label_key].astype(str).to_numpy()
    depth = depth_features(adata, library_key)
    genes = np.expm1(depth[:, 0])
    base = {b: baseline_embedding(adata.X, b, seed=0) for b in ("pca50", "lognorm")}
    base[DEPTH_CONTROL] = depth
    sc = _scvi_embedding(adata, 0, ev.scvi_epochs)
    if sc is not None:
        base["scvi"] = sc
    frames = _knn_rows(name, base, labels, genes, np.nan)
    for seed, run in runs.items():
        embs = {ZERO_SHOT: _model_embedding(adata, run["model"], library_key, ev.pooling),
                RANDOM_INIT: _model_embedding(adata, run["random"], library_key, ev.pooling)}
        adapt = ev.adapt_on is None or name in ev.adapt_on
        if ev.ssl_steps and adapt:
            from tfmkit.finetune.ssl import finetune_ssl

            (work / ".ssl").mkdir(exist_ok=True)
            ssl_dir = finetune_ssl(run["model"], adata, work / ".ssl" / f"{name}_seed{seed}",
                                   steps=ev.ssl_steps, seed=seed, library_key=library_key,
                                   allow_low_coverage=True)
            embs[SSL] = _model_embedding(adata, load_model(ssl_dir), library_key, ev.pooling)
        if ev.scratch_steps and adapt:  # the alternative to adaptation: the same model trained on these cells only
            from tfmkit.finetune.ssl import finetune_ssl

            (work / ".ssl").mkdir(exist_ok=True)
            scratch = finetune_ssl(run["model"], adata, work / ".ssl" / f"{name}_scratch{seed}",
                                   steps=ev.scratch_steps, seed=seed, library_key=library_key,
                                   allow_low_coverage=True, init="random")
            embs[TARGET_SCRATCH] = _model_embedding(adata, load_model(scratch), library_key, ev.pooling)
        frames += _knn_rows(name, embs, labels, genes, seed)
        if seed == min(runs):
            for k, X in embs.items():
                adata.obsm[k] = X
    adata.obsm["pca50"] = base["pca50"]
    return pd.concat(frames, ignore_index=True), {"adata": adata, "label_key": label_key,
                                                  "n_dropped": n_dropped}

_T0 = [time.perf_counter()]  # start of the current demo (set by run_demo); stage lines show the elapsed time


def _stage(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]demo[/bold cyan] [{time.perf_counter() - _T0[0]:.0f} s] {msg}")


def _train_runs(cfg, work: Path, seeds, progress: bool = True) -> dict:
    """Pretrain one model per training seed (seed ``seeds[0]`` into ``work``, the kept model;
    the others under ``work/.seeds``) and the same architecture at random initialisation (one
    optimiser step at learning rate 0, so the weights are exactly the seed's initialisation)."""
    from dataclasses import replace

    from tfmkit.inference import load_model
    from tfmkit.training import load_corpus, pretrain

    corpus = None  # loaded by the first run's pretrain, then once more here for the others
    runs = {}
    for i, seed in enumerate(seeds):
        c = replace(cfg, train=replace(cfg.train, seed=seed))
        where = work if i == 0 else work / ".seeds" / f"seed{seed}"
        _stage(f"pretraining TxFM-{cfg.model.preset} (seed {seed}) for {cfg.train.steps} steps on the bundled BALF cells")
        t0 = time.perf_counter()
        kw = {} if corpus is None else {"corpus": corpus}
        model_dir = pretrain(c, where, progress=progress, **kw)
        corpus = corpus if corpus is not None else load_corpus(cfg)
        runs[seed] = {"model": load_model(model_dir), "train_s": time.perf_counter() - t0}
        r = replace(c, train=replace(c.train, steps=1, lr=0.0, weight_decay=0.0, val_every=0,
                                     checkpoint_every=1))
        rand_dir = pretrain(r, work / ".seeds" / f"random{seed}", corpus=corpus, progress=False)
        runs[seed]["random"] = load_model(rand_dir)
    return runs


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
    from tfmkit.demo_report import embedding_plot, loss_plot, markdown

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
        t_start = _T0[0] = time.perf_counter()
        runs = _train_runs(cfg, work, ev.train_seeds)
        frames, extra = [], {}
        loaders = {"pbmc68k": datasets.load_pbmc68k, "wu2020": datasets.load_wu2020}
        for name, (label_key, library_key) in EVAL_SETS.items():
            _stage(f"{name}: zero-shot, SSL-adapted and random-init embeddings vs baselines")
            df, info = _eval_dataset(name, loaders[name](), label_key, runs, library_key, ev, work)
            frames.append(df)
            extra[name] = info
            if extra_benchmarks:
                _stage(f"{name}: cell-type benchmark (probes, clustering, silhouettes, LISI)")
                frames.append(_celltype_rows(name, info, ev))
            _stage(f"{name}: plots")
            embedding_plot(info["adata"], label_key, work / f"embedding_{name}.png", name,
                           keys=[k for k in (ZERO_SHOT, SSL, "pca50") if k in info["adata"].obsm],
                           umap=ev.umap)
        model = runs[ev.train_seeds[0]]["model"]
        if extra_benchmarks and ev.gene_benchmarks:
            _stage("gene-relationship recall")
            frames.append(_gene_rows(model, ev))
            _stage("held-out reconstruction")
            frames.append(_pretraining_rows(model, ev))
        results = pd.concat(frames, ignore_index=True)
        _stage("report")
        results.to_csv(work / "results.csv", index=False)
        loss_plot(work / "train_log.csv", work / "loss_curve.png")
        shutil.rmtree(work / ".seeds", ignore_errors=True)
        shutil.rmtree(work / ".ssl", ignore_errors=True)
        timing = {"train_s": [r["train_s"] for r in runs.values()], "total_s": time.perf_counter() - t_start}
        (work / "report.md").write_text(markdown(results, extra, budget, timing, cfg, ev))
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
                                        obsm_keys=[k for k in MODEL_ROWS if k in info["adata"].obsm],
                                        n_seeds=ev.celltype_seeds,
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
