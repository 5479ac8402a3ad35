"""Issue 12 evidence: reveal rule x gene-visible tokens x weight decay, 3 training seeds.

Trains the pre-declared grid ``configs/ablations/science.yaml`` with the ablation runner
(:func:`tfmkit.ablation.run_ablation`), then scores every trained model zero-shot on pbmc68k
(``bulk_labels``; 765 genes, embedded with ``allow_low_coverage``) and Wu 2020 with one protocol:

- kNN accuracy (k = 10, stratified 5-fold, pooled over cells; the registered ``knn`` runner)
  of the CLS and of the mean-pooled token states (the deterministic per-cell ``tfmkit.embed``);
- ``|Spearman(PC1, genes/cell)|``: rank correlation of the embedding's first principal
  component with the number of expressed genes of each cell (depth diagnostic);
- a depth-only control: the same kNN on ``[log genes/cell, log total counts]``.

Usage (2 processes, seeds split, then the evaluation)::

    python benchmarks/science_ablation.py train --out abl --seeds 0,1 &
    python benchmarks/science_ablation.py train --out abl --seeds 2 &
    python benchmarks/science_ablation.py evaluate --out abl      # abl/science.md, abl/science_per_seed.csv

Defaults are chosen among the grid's cells by these numbers; no other value is tuned on the
evaluation labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))


def train(out: Path, seeds: list[int], extra: list[str]) -> None:
    from tfmkit.ablation.grid import load_grid
    from tfmkit.ablation.run import run_ablation

    grid = load_grid("science")
    grid.seeds = seeds
    sub = out / ("seeds" + "".join(map(str, seeds)))
    t = time.time()
    res = run_ablation(grid, sub, extra_overrides=extra, overwrite=True, progress=False)
    print(res["table"], f"\n{time.time() - t:.0f} s", flush=True)


def depth_features(ad, library_key) -> np.ndarray:
    """``(n, 2)``: log genes/cell and log total counts (``library_key`` column when given)."""
    import scipy.sparse as sp

    X = ad.X.tocsr() if sp.issparse(ad.X) else sp.csr_matrix(ad.X)
    genes = np.diff(X.indptr).astype(float)
    total = ad.obs[library_key].to_numpy(float) if library_key else np.asarray(X.sum(1)).ravel()
    return np.column_stack([np.log1p(genes), np.log1p(total)])


def pc1_depth(E: np.ndarray, genes: np.ndarray) -> float:
    """``|Spearman(PC1 of E, genes/cell)|``."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    pc1 = PCA(1, random_state=0).fit_transform(E - E.mean(0))[:, 0]
    return float(abs(spearmanr(pc1, genes).statistic))


def evaluate(out: Path) -> None:
    from tfmkit import embed, load_model
    from tfmkit.ablation.evaluate import load_eval_sets
    from tfmkit.evaluation.knn import knn_cv_scores

    sets = load_eval_sets({"celltype": ["pbmc68k", "wu2020"]})
    rows = []
    for name, (ad, label, lib) in sets.items():
        y = ad.obs[label].to_numpy()
        acc = np.mean([knn_cv_scores(depth_features(ad, lib), y, seed=s)["accuracy"] for s in (0, 1, 2)])
        rows.append({"cell": "depth-only control", "seed": -1, "dataset": name, "pooling": "-",
                     "knn": acc, "pc1_depth": np.nan})
    for model_dir in sorted(out.glob("seeds*/runs/*/seed*/model")):
        seed = int(model_dir.parent.name[4:])
        cell = model_dir.parent.parent.name
        cache = model_dir.parent / "science_eval.csv"  # per-model rows, reused when re-run
        stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
        if cache.exists() and (c := pd.read_csv(cache))["stamp"].eq(stamp).all():
            rows += c.drop(columns="stamp").to_dict("records")
            continue
        first = len(rows)
        model = load_model(model_dir)
        for name, (ad, label, lib) in sets.items():
            ad = ad.copy()
            y = ad.obs[label].to_numpy()
            genes = np.expm1(depth_features(ad, lib)[:, 0])
            for pooling in ("cls", "mean"):
                embed(ad, model, key="X", pooling=pooling, library_key=lib, allow_low_coverage=True)
                E = ad.obsm["X"]
                rows.append({"cell": cell, "seed": seed, "dataset": name, "pooling": pooling,
                             "knn": knn_cv_scores(E, y, seed=seed)["accuracy"],
                             "pc1_depth": pc1_depth(E, genes)})
        pd.DataFrame(rows[first:]).assign(stamp=stamp).to_csv(cache, index=False)
        print(cell, seed, rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "science_per_seed.csv", index=False)
    agg = (df.groupby(["cell", "dataset", "pooling"])
             .agg(knn_mean=("knn", "mean"), knn_sd=("knn", "std"), pc1_mean=("pc1_depth", "mean"),
                  pc1_sd=("pc1_depth", "std"), seeds=("seed", "nunique")).reset_index())
    agg.to_csv(out / "science_summary.csv", index=False)
    lines = ["| cell | dataset | pooling | kNN acc (mean ± sd) | abs Spearman(PC1, genes/cell) | seeds |",
             "|---|---|---|---|---|---|"]
    for r in agg.itertuples(index=False):
        pc = "-" if np.isnan(r.pc1_mean) else f"{r.pc1_mean:.2f} ± {0 if np.isnan(r.pc1_sd) else r.pc1_sd:.2f}"
        sd = 0 if np.isnan(r.knn_sd) else r.knn_sd
        lines.append(f"| {r.cell} | {r.dataset} | {r.pooling} | {r.knn_mean:.3f} ± {sd:.3f} | {pc} | {r.seeds} |")
    (out / "science.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TFMKIT_NO_PROGRESS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train", "evaluate"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--extra", nargs="*", default=[], help="extra overrides (e.g. train.steps=2)")
    a = ap.parse_args()
    if a.what == "train":
        train(a.out, [int(s) for s in a.seeds.split(",")], a.extra)
    else:
        evaluate(a.out)
