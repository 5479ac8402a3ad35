"""Runtime of the perturbation-representation benchmark on a 20,000-cell, 200-perturbation
SIMULATED screen with 5 embeddings (acceptance target: < 10 minutes on 2 CPU cores).

Embeddings: the baselines ``lognorm`` (5,000 most variable genes), ``hvg1024``, ``pca50`` and
``random_label_shuffle`` plus one model-like ``obsm`` embedding (a 256-d random projection of
the log-normalised counts, standing in for a foundation-model embedding). Full protocol: three
post-processings, six tasks, 5 seeds, N = 10,000 null cells.

    python benchmarks/perturbation_runtime.py [--out DIR] [--cells-per-perturbation 90]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="perturbation-runtime", help="output folder for results.csv/md")
    ap.add_argument("--perturbations", type=int, default=200)
    ap.add_argument("--cells-per-perturbation", type=int, default=90)
    ap.add_argument("--controls", type=int, default=2000)
    ap.add_argument("--n-seeds", type=int, default=5)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from tfmkit.data.normalize import lognorm
    from tfmkit.datasets.simulate import simulate_perturbseq
    from tfmkit.evaluation.perturbation import benchmark_perturbation, table2
    from tfmkit.evaluation.perturbation.report import write_perturbation_results

    t0 = time.perf_counter()
    adata = simulate_perturbseq(n_perturbations=args.perturbations,
                                cells_per_perturbation=args.cells_per_perturbation,
                                n_controls=args.controls, n_batches=4, seed=0)
    L = lognorm(adata.X)
    proj = np.random.default_rng(0).normal(size=(adata.n_vars, 256)).astype(np.float32) / 16.0
    adata.obsm["X_randproj256"] = np.asarray(L @ proj, dtype=np.float32)
    t_sim = time.perf_counter() - t0
    print(f"simulated {adata.n_obs} cells x {adata.n_vars} genes, "
          f"{adata.obs.perturbation.nunique() - 1} perturbations in {t_sim:.1f} s")

    t1 = time.perf_counter()
    df = benchmark_perturbation(adata, obsm_keys=["X_randproj256"],
                                control_key="is_control", control_value=True,
                                baselines=("lognorm", "hvg1024", "pca50", "random_label_shuffle"),
                                n_seeds=args.n_seeds, progress=True)
    t_bench = time.perf_counter() - t1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(table2(df).round(2).to_string())
    print(f"benchmark: {t_bench:.1f} s ({t_bench / 60:.2f} min) for 5 embeddings on {cores} core(s); "
          f"simulation {t_sim:.1f} s")
    write_perturbation_results(df, args.out, overwrite=args.overwrite,
                               notes=f"Runtime: {t_bench:.1f} s on {cores} core(s) (simulation {t_sim:.1f} s).")


if __name__ == "__main__":
    main()
