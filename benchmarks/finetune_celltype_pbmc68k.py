"""Issue 9 acceptance: fine-tuned cell-type classifier vs baselines on pbmc68k (held-out split).

Not part of the test suite. For each seed, a stratified 25% of the 700 pbmc68k cells
(``bulk_labels``, 10 classes) is held out; every method is fit on the other 75% only:

- ``l1_logistic_hvg``: L1 logistic regression (C by 3-fold CV) on standardised lognorm HVGs;
- ``logistic_pca50`` / ``knn_pca50``: logistic regression (C by CV) and kNN (k by CV) on PCA-50
  of lognorm (PCA fit on the training cells);
- ``finetuned``: ``tfmkit.finetune.finetune_celltype`` from the parent model (--parent);
- ``random_init``: the same architecture and recipe from random weights.

Lognorm = ``log1p(1e4 * counts / n_counts)`` (n_counts = the cell's full-transcriptome total).
Usage: ``python benchmarks/finetune_celltype_pbmc68k.py --parent /tmp/ft_parent/model --seeds 0 1 2``
(the parent: ``tfmkit pretrain --config txfm_tiny --out /tmp/ft_parent train.steps=300``).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler


def lognorm(a) -> np.ndarray:
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    return np.log1p(1e4 * X / a.obs["n_counts"].to_numpy()[:, None])


def hvg(L_train: np.ndarray, n: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(L_train.astype(np.float32))
    sc.pp.highly_variable_genes(tmp, n_top_genes=n, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def baselines(a, tr, te, y, seed: int) -> dict[str, np.ndarray]:
    L = lognorm(a)
    out = {}
    genes = hvg(L[tr], 500)
    sc = StandardScaler().fit(L[tr][:, genes])
    l1 = LogisticRegressionCV(Cs=[0.03, 0.1, 0.3, 1.0], l1_ratios=(1.0,), solver="saga", cv=3,
                              max_iter=3000, random_state=seed, scoring="accuracy",
                              use_legacy_attributes=False)
    out["l1_logistic_hvg"] = l1.fit(sc.transform(L[tr][:, genes]), y[tr]).predict(sc.transform(L[te][:, genes]))
    pca = PCA(50, random_state=seed).fit(L[tr])
    Ptr, Pte = pca.transform(L[tr]), pca.transform(L[te])
    lr = LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], l1_ratios=(0.0,), cv=3, max_iter=3000,
                              random_state=seed, scoring="accuracy", use_legacy_attributes=False)
    out["logistic_pca50"] = lr.fit(Ptr, y[tr]).predict(Pte)
    knn = GridSearchCV(KNeighborsClassifier(), {"n_neighbors": [5, 15, 30]}, cv=3)
    out["knn_pca50"] = knn.fit(Ptr, y[tr]).predict(Pte)
    return out


def model_preds(a, tr, te, parent: str, seed: int, args, init: str) -> np.ndarray:
    from tfmkit.finetune import finetune_celltype, predict

    with tempfile.TemporaryDirectory() as tmp:
        m = finetune_celltype(parent, a[tr].copy(), "bulk_labels", Path(tmp) / "ft", mode=args.mode,
                              steps=args.steps, lr=args.lr, batch_size=32, val_every=25,
                              patience=args.patience, seed=seed, init=init, library_key="n_counts", allow_low_coverage=True,
                              n_revealed=args.n_revealed, head=args.head, pooling=args.pooling)
        test = a[te].copy()
        predict(test, m, library_key="n_counts", allow_low_coverage=True, n_views=args.n_views, seed=seed)
        return test.obs["tfmkit_pred"].astype(str).to_numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parent", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--mode", default="full")
    p.add_argument("--head", default="linear")
    p.add_argument("--pooling", default="mean", help="cls, mean or cls+mean (mean: the issue-12 ablation)")
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--n-revealed", type=int, default=None)
    p.add_argument("--n-views", type=int, default=1)
    p.add_argument("--no-random-init", action="store_true")
    p.add_argument("--out", default=None, help="CSV of all rows")
    args = p.parse_args()
    from tfmkit.datasets import load_pbmc68k

    a = load_pbmc68k()
    y = a.obs["bulk_labels"].astype(str).to_numpy()
    rows = []
    for seed in args.seeds:
        tr, te = train_test_split(np.arange(a.n_obs), test_size=0.25, random_state=seed, stratify=y)
        preds = baselines(a, tr, te, y, seed)
        for init in (["pretrained"] if args.no_random_init else ["pretrained", "random"]):
            t0 = time.time()
            preds["finetuned" if init == "pretrained" else "random_init"] = model_preds(a, tr, te, args.parent, seed, args, init)
            print(f"seed {seed} {init}: {time.time() - t0:.0f} s", flush=True)
        for name, pr in preds.items():
            rows.append({"seed": seed, "method": name, "accuracy": accuracy_score(y[te], pr),
                         "macro_f1": f1_score(y[te], pr, average="macro")})
        print(pd.DataFrame(rows[-len(preds):]).to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby("method")[["accuracy", "macro_f1"]].agg(["mean", "std"]).round(3)
    print(f"\nsettings: {vars(args)}")
    print(summary.to_string())
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
