"""Time tfmkit's cell-type benchmark against ``scib_metrics.benchmark.Benchmarker``.

Same inputs for both: 10,000 cells, 5 embeddings (16/32/64/128/256 dims), 12 labels, 4 batches
(seeded synthetic clusters with a batch shift), one subsample/seed. Timed:

- ``tfmkit metrics``: every clustering/integration metric of
  :func:`tfmkit.evaluation.metrics_celltype.celltype_metrics` (Leiden NMI/ARI sweep, label ASW,
  ASW_l/b, batch ASW, cLISI, iLISI, graph connectivity, isolated-label F1 and ASW);
- ``tfmkit probes``: linear + MLP + kNN probes (no scib-metrics counterpart);
- ``scib Benchmarker``: ``prepare()`` + ``benchmark()`` with its default metrics plus the
  Leiden NMI/ARI sweep (pynndescent neighbours, kBET, BRAS, PCR comparison, …).

Prints wall-clock seconds and the ratio ``tfmkit / scib`` (< 1: tfmkit is faster).
Usage: ``python benchmarks/celltype_vs_scib.py [--n-cells 10000] [--skip-probes]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def make_inputs(n_cells: int, seed: int = 0):
    """Seeded synthetic embeddings with 12 labelled clusters and 4 shifted batches."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, n_cells)
    batches = rng.integers(0, 4, n_cells)
    centers = rng.normal(size=(12, 256)) * 2.0
    embs = {}
    for d in (16, 32, 64, 128, 256):
        embs[f"e{d}"] = (centers[labels, :d] + rng.normal(size=(n_cells, d))
                         + 0.5 * batches[:, None]).astype(np.float32)
    return embs, labels.astype(str), batches.astype(str)


def time_tfmkit(embs, labels, batches, probes: bool) -> tuple[float, float]:
    from tfmkit.evaluation.metrics_celltype import celltype_metrics
    from tfmkit.evaluation.probes import knn_probe, probe_scores

    t0 = time.perf_counter()
    for X in embs.values():
        celltype_metrics(X, labels, batches, seed=0)
    t_metrics = time.perf_counter() - t0
    t0 = time.perf_counter()
    if probes:
        for X in embs.values():
            probe_scores(X, labels, batches, kind="linear")
            probe_scores(X, labels, batches, kind="mlp")
            knn_probe(X, labels)
    return t_metrics, time.perf_counter() - t0


def time_scib(embs, labels, batches) -> float:
    import anndata as ad
    import pandas as pd
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    n = len(labels)
    rng = np.random.default_rng(1)
    adata = ad.AnnData(X=rng.normal(size=(n, 200)).astype(np.float32),
                       obs=pd.DataFrame({"ct": labels, "batch": batches},
                                        index=[str(i) for i in range(n)]))
    for k, X in embs.items():
        adata.obsm[k] = X
    t0 = time.perf_counter()
    bm = Benchmarker(adata, batch_key="batch", label_key="ct", embedding_obsm_keys=list(embs),
                     bio_conservation_metrics=BioConservation(nmi_ari_cluster_labels_leiden=True),
                     batch_correction_metrics=BatchCorrection(), n_jobs=1, progress_bar=False)
    bm.prepare()
    bm.benchmark()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=10_000)
    ap.add_argument("--skip-probes", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    embs, labels, batches = make_inputs(args.n_cells)
    t_m, t_p = time_tfmkit(embs, labels, batches, probes=not args.skip_probes)
    t_s = time_scib(embs, labels, batches)
    print(f"cells={args.n_cells} embeddings={len(embs)}")
    print(f"tfmkit metrics (scib-equivalent set): {t_m:8.1f} s")
    if not args.skip_probes:
        print(f"tfmkit probes (linear+MLP+kNN):       {t_p:8.1f} s")
    print(f"scib Benchmarker (prepare+benchmark): {t_s:8.1f} s")
    print(f"ratio tfmkit metrics / scib:          {t_m / t_s:8.2f}")
    if not args.skip_probes:
        print(f"ratio tfmkit metrics+probes / scib:   {(t_m + t_p) / t_s:8.2f}")


if __name__ == "__main__":
    main()
