"""Integrated-gradients top genes of a pbmc68k cell-type classifier vs a shuffled-label one
(issue 9 item 5). Not part of the test suite (minutes on CPU).

    python benchmarks/explain_pbmc68k.py --out /tmp/expl [--seed 0]

Steps: pretrain a tiny TxFM on the bundled pbmc68k subset (700 cells, 765 genes; all-gene reveal
sampling, ``data.expressed_only=false``) -> fine-tune a classifier on ``bulk_labels`` and one on
seeded-permuted labels (same settings) -> :func:`tfmkit.finetune.explain.explain` (zero
baseline) -> for B cells, CD14+ monocytes and NK cells, which textbook markers are among the top
``--n-top`` genes (MS4A1/CD79A, CD14/LYZ, GNLY/NKG7; CD14 is not among pbmc68k's 765 genes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

MARKERS = {"CD19+ B": ["MS4A1", "CD79A"], "CD14+ Monocyte": ["CD14", "LYZ"], "CD56+ NK": ["GNLY", "NKG7"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--n-revealed", type=int, default=384)
    ap.add_argument("--n-top", type=int, default=20)
    ap.add_argument("--cells-per-class", type=int, default=32)
    args = ap.parse_args()

    from tfmkit.config import load_config
    from tfmkit.datasets import load_pbmc68k
    from tfmkit.finetune import finetune_celltype, predict
    from tfmkit.finetune.explain import explain, top_genes
    from tfmkit.training import pretrain

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pbmc = load_pbmc68k()
    print(f"pbmc68k: {pbmc.n_obs} cells x {pbmc.n_vars} genes; markers present: "
          f"{[g for m in MARKERS.values() for g in m if g in pbmc.var_names]}", flush=True)
    parent = out / "parent" / "model"
    if not parent.exists():
        cfg = load_config("txfm_tiny", [f"train.steps={args.pretrain_steps}", f"train.seed={args.seed}",
                                        f"train.checkpoint_every={args.pretrain_steps}", "data.min_cells=1",
                                        f"data.n_revealed={args.n_revealed}", "data.expressed_only=false",
                                        "data.zero_fraction=0", "model.gene_norm=false"])
        parent = pretrain(cfg, out / "parent", adatas={"pbmc68k": pbmc}, progress=False)
    print(f"parent {parent} ({time.time() - t0:.0f}s)", flush=True)
    shuffled = pbmc.copy()
    shuffled.obs["bulk_labels"] = np.random.default_rng(args.seed).permutation(pbmc.obs["bulk_labels"].astype(str).to_numpy())
    rows = []
    for name, data in (("classifier", pbmc), ("shuffled_label_classifier", shuffled)):
        ft = out / f"{name}_s{args.seed}"
        if not (ft / "model").exists():
            finetune_celltype(parent, data, "bulk_labels", ft, mode="full", steps=args.steps, lr=1e-3,
                              batch_size=32, patience=0, seed=args.seed)
        acc = predict(pbmc.copy(), ft / "model")["accuracy"]
        r = explain(pbmc, ft / "model", label_key="bulk_labels", n_cells_per_class=args.cells_per_class,
                    n_views=3, n_steps=32, classes=list(MARKERS), seed=args.seed)
        top = top_genes(r["attributions"], args.n_top)
        top.to_csv(out / f"top_genes_{name}.csv", index=False)
        print(f"--- {name}: accuracy vs true bulk_labels (training cells) {acc:.3f}; IG completeness error "
              f"{r['delta']:.2e} (mean |F(x) - F(0)| {r['mean_abs_score_change']:.3g}) ({time.time() - t0:.0f}s)")
        for cls, markers in MARKERS.items():
            t = top[top["class"] == cls]
            found = [g for g in markers if g in set(t["gene"])]
            ranks = {g: int(t.loc[t["gene"] == g, "rank"].iloc[0]) for g in found}
            print(f"{cls}: top {args.n_top} = {', '.join(t['gene'])}\n   markers found: {ranks or 'none'}")
            rows.append({"model": name, "class": cls, "markers": "/".join(markers), "found": len(found),
                         "ranks": str(ranks), "accuracy": acc, "seed": args.seed})
    res = pd.DataFrame(rows)
    res.to_csv(out / "marker_check.csv", index=False)
    print(res.to_string(index=False))


if __name__ == "__main__":
    main()
