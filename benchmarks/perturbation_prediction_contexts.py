"""Leave-one-context-out perturbation prediction on the SIMULATED 3-context screen (issue 9 item 3
acceptance): the fine-tuned model vs control_mean, train_mean, the linear gene-embedding
baseline and additive_shift (the perturbation's mean observed effect in the training contexts).
Not part of the test suite (minutes on CPU).

    python benchmarks/perturbation_prediction_contexts.py --out /tmp/ppc [--seed 0] [--folds all]

Steps: ``simulate_perturbseq(contexts=3)`` (SIMULATED CRISPRi on the bundled BALF macrophages,
T cells and epithelial cells) -> pretrain a tiny TxFM parent on the bundled BALF data -> for each
held-out context: ``finetune_perturbation(split="context")`` -> ``benchmark_perturbation_prediction``.
Prints every results row and writes ``OUT/results_<tag>_<context>_s<seed>.csv`` and
``OUT/all_results_<tag>_s<seed>.csv`` (the tag names the settings; cached screens and fine-tunes
are keyed by them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contexts", type=int, default=3)
    ap.add_argument("--perturbations", type=int, default=24)
    ap.add_argument("--cells", type=int, default=100, help="cells per perturbation and context")
    ap.add_argument("--effect-size", type=float, default=1.5, help="simulated partner log-fold-change scale")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-revealed", type=int, default=256)
    ap.add_argument("--n-control", type=int, default=256)
    ap.add_argument("--train-controls", action="store_true",
                    help="also train on control cells (no token); the headline row is then the delta readout")
    ap.add_argument("--cls-only", action="store_true", help="GPL's CLS-only head (no token readout)")
    ap.add_argument("--gene-norm", action="store_true",
                    help="parent with model.gene_norm=true (gene identity visible in expressed tokens, issue 12)")
    ap.add_argument("--folds", default="all", help="comma-separated held-out contexts, or all")
    args = ap.parse_args()

    from tfmkit.config import load_config
    from tfmkit.datasets.simulate import simulate_perturbseq
    from tfmkit.evaluation.perturbation_prediction import benchmark_perturbation_prediction
    from tfmkit.finetune.perturbation import finetune_perturbation
    from tfmkit.training import pretrain

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # the cache is keyed by every simulation setting (a fixed name silently reused an older screen)
    sim_path = out / (f"simulated_{args.contexts}ctx_p{args.perturbations}_c{args.cells}_e{args.effect_size:g}"
                      f"_s{args.seed}.h5ad")
    if sim_path.exists():
        import anndata as ad

        sim = ad.read_h5ad(sim_path)
    else:
        sim = simulate_perturbseq(contexts=args.contexts, n_perturbations=args.perturbations,
                                  cells_per_perturbation=args.cells, n_batches=2, min_gene_frac=0.05,
                                  effect_size=args.effect_size, seed=args.seed)
        sim.write_h5ad(sim_path)
    print(f"SIMULATED screen: {sim.n_obs} cells x {sim.n_vars} genes, contexts "
          f"{sorted(sim.obs['context'].unique())} ({time.time() - t0:.0f}s)", flush=True)
    pname = "parent_gn" if args.gene_norm else "parent"
    parent = out / pname / "model"
    if not parent.exists():
        cfg = load_config("txfm_tiny", [f"train.steps={args.pretrain_steps}", f"train.seed={args.seed}",
                                        f"train.checkpoint_every={args.pretrain_steps}",
                                        f"model.gene_norm={str(args.gene_norm).lower()}"])
        parent = pretrain(cfg, out / pname, progress=False)
    print(f"parent {parent} ({time.time() - t0:.0f}s)", flush=True)
    folds = sorted(sim.obs["context"].unique()) if args.folds == "all" else args.folds.split(",")
    tag = (("ctl" if args.train_controls else "pert") + ("_cls" if args.cls_only else "") +
           ("_gn" if args.gene_norm else "") +
           f"_c{args.cells}_e{args.effect_size:g}_st{args.steps}_lr{args.lr:g}_k{args.n_revealed}")
    frames = []
    for ctx in folds:
        ft = out / f"ft_{tag}_{ctx.replace(' ', '_')}_s{args.seed}"
        if not (ft / "model").exists():
            finetune_perturbation(parent, sim, ft, split="context", holdout=ctx, steps=args.steps, lr=args.lr,
                                  batch_size=32, n_revealed=args.n_revealed, val_every=100,
                                  train_controls=args.train_controls, token_readout=not args.cls_only,
                                  seed=args.seed)
        res, per = benchmark_perturbation_prediction(ft / "model", sim, n_control=args.n_control, seed=args.seed)
        res["fold"] = ctx
        res["seed"] = args.seed
        res.to_csv(out / f"results_{tag}_{ctx.replace(' ', '_')}_s{args.seed}.csv", index=False)
        per.to_csv(out / f"per_perturbation_{tag}_{ctx.replace(' ', '_')}_s{args.seed}.csv", index=False)
        print(f"--- held-out context {ctx!r} ({time.time() - t0:.0f}s)")
        print(res.pivot(index="embedding", columns="metric", values="value").round(4).to_string(), flush=True)
        frames.append(res)
    allres = pd.concat(frames)
    allres.to_csv(out / f"all_results_{tag}_s{args.seed}.csv", index=False)
    print(allres[["fold", "embedding", "metric", "value", "n_perturbations"]].to_string(index=False))


if __name__ == "__main__":
    main()
