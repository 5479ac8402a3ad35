"""Training-step cost of the ``gpl_ar`` family against TxFM at equal width and equal N/K.

Each family is built from its shipped config (``txfm_tiny``/``gpl_ar_tiny`` for width 128,
``txfm_s``/``gpl_ar_s`` for width 384) through the generic training path
(:func:`tfmkit.training.build_training`, ``task.collator``, ``task.loss``), on one synthetic
corpus whose cells all express at least ``N`` of the ``G`` genes, so TxFM reveals ``K = N``
tokens and GPL-AR takes ``N`` expressed + ``ceil(0.1 N)`` undetected tokens. Timed: forward,
loss, backward, clipping and the AdamW step of one batch (batch building timed separately),
median over ``--steps`` after ``--warmup`` steps. Prints the load average (``uptime``) before
and after, since the machine may be shared.

    OMP_NUM_THREADS=1 python benchmarks/family_step_cost.py --genes 2000 --n 256 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

PAIRS = {"tiny": ("txfm_tiny", "gpl_ar_tiny"), "S": ("txfm_s", "gpl_ar_s")}


def synthetic_corpus(n_cells: int, n_genes: int, n_expressed: int, seed: int = 0):
    """A one-dataset corpus whose cells each express ``>= n_expressed`` genes (NB-like counts)."""
    from tfmkit.data.corpus import Corpus
    from tfmkit.data.vocab import GeneVocab

    rng = np.random.default_rng(seed)
    X = np.zeros((n_cells, n_genes), dtype=np.float32)
    for i in range(n_cells):
        on = rng.choice(n_genes, size=min(n_genes, int(n_expressed * 1.5)), replace=False)
        X[i, on] = 1 + rng.poisson(rng.gamma(0.7, 4.0, on.size))
    genes = [f"G{i}" for i in range(n_genes)]
    a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
                   var=pd.DataFrame(index=genes))
    a.var["hgnc_status"] = "approved"  # synthetic ids: skip HGNC harmonisation
    return Corpus.from_adatas({"synthetic": a}, vocab=GeneVocab(genes))


def step_cost(config: str, corpus, n: int, batch: int, steps: int, warmup: int) -> dict:
    """Median seconds per training step (and per batch build) of run config ``config``."""
    from tfmkit.config import load_config
    from tfmkit.training import build_training

    cfg = load_config(config, [f"data.n_revealed={n}", f"train.batch_size={batch}", "train.device=cpu",
                               "train.precision=fp32", "model.drop_path=0.0" if "txfm" in config else
                               "model.condition_dropout=0.0"])
    state = build_training(cfg, corpus.vocab.n_genes, torch.device("cpu"), corpus.vocab)
    collate = state.task.collator(corpus)
    params = list(state.model.parameters()) + list(state.task.parameters())
    g = torch.Generator().manual_seed(0)
    times, builds, tokens = [], [], []
    for s in range(warmup + steps):
        idx = np.arange(s * batch, (s + 1) * batch) % corpus.n_cells
        t0 = time.perf_counter()
        b = collate(corpus, idx, g)
        t1 = time.perf_counter()
        loss = state.task.loss(state.model(b), b).mean()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        state.optimizer.step()
        t2 = time.perf_counter()
        if s >= warmup:
            times.append(t2 - t1)
            builds.append(t1 - t0)
            tokens.append(int((~b["padding"]).sum()) / batch)
    return {"config": config, "params_M": sum(p.numel() for p in state.model.parameters()) / 1e6,
            "tokens_per_cell": statistics.mean(tokens), "step_s": statistics.median(times),
            "batch_build_s": statistics.median(builds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=2000, help="vocabulary size G")
    ap.add_argument("--n", type=int, default=256, help="N expressed genes (GPL-AR) = K revealed (TxFM)")
    ap.add_argument("--batch", type=int, default=4, help="cells per step")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--widths", default="tiny,S", help="comma list of: tiny (128), S (384)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    corpus = synthetic_corpus(args.batch * (args.steps + args.warmup), args.genes, args.n)
    print(f"G={args.genes} N=K={args.n} batch={args.batch} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    print(f"{'config':<14}{'params(M)':>10}{'tokens/cell':>13}{'step (s)':>10}{'batch (s)':>11}{'ratio':>8}")
    for width in args.widths.split(","):
        base = None
        for config in PAIRS[width]:
            r = step_cost(config, corpus, args.n, args.batch, args.steps, args.warmup)
            base = base or r["step_s"]
            print(f"{r['config']:<14}{r['params_M']:>10.2f}{r['tokens_per_cell']:>13.1f}"
                  f"{r['step_s']:>10.3f}{r['batch_build_s']:>11.3f}{r['step_s'] / base:>8.2f}", flush=True)
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
