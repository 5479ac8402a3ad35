"""Speed of ``tfmkit.objectives.gpl_nll`` (forward + backward) on CPU.

Compares, on the same inputs (ISSUE 5 acceptance, default B = 32 cells, V = 36,000 genes,
S = 5,000 expressed genes per cell, 95% of genes observable):

(a) ``gpl_nll_dense``: a straightforward implementation of the same likelihood that
    materialises the ``S x V`` comparison matrices (for every expressed gene, which genes have a
    count >= / > / == its count) and lets autograd do the backward; looped over cells to fit in
    memory (about 1.5 GB per cell at the default shape; it is timed on ``--dense-cells`` cells
    and scaled linearly to ``B``, since its cost is a plain per-cell loop);
(b) ``poisson_nll`` (the TxFM default loss) on ``(B, V)`` predictions/targets;

and reports the ratios ``time(a) / time(gpl_nll)`` (target >= 20) and
``time(gpl_nll) / time(b)`` (target <= 3). Timings are medians over repeats, interleaved so
that background load hits all contenders alike; wall-clock and process CPU time are both
reported (CPU time is the more stable one on a shared machine).

Usage::

    python benchmarks/gpl_speed.py [--cells 32] [--genes 36000] [--expressed 5000]
        [--threads 1] [--repeats 15] [--dense-repeats 1] [--dense-cells 4] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from tfmkit.objectives import _log1mexp, gpl_nll, poisson_nll


def gpl_nll_dense(logits: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference GPL NLL with ``O(V * S)`` memory and time per cell (autograd backward).

    For each expressed gene ``i`` with block ``B(i)``: ``T(i) = sum_{l: k_l >= k_i} b_l`` and
    ``T'(i) = sum_{l: k_l > k_i} b_l``; each block's term ``T' - log1mexp(T)`` is shared by its
    ``|B(i)|`` genes; the zero block adds ``T_2 - log1mexp(T_1)``; every gene adds
    ``logsig(-phi)``.
    """
    losses = []
    for r in range(logits.shape[0]):
        m = mask[r]
        phi, k = logits[r][m], counts[r][m].to(logits.dtype)  # (V_obs,)
        a, b = F.logsigmoid(-phi), F.logsigmoid(phi)
        k_e = k[k > 0]  # (S,)
        ge = (k.unsqueeze(0) >= k_e.unsqueeze(1)).to(phi.dtype)  # (S, V) R of i's block
        gt = (k.unsqueeze(0) > k_e.unsqueeze(1)).to(phi.dtype)  # (S, V) R minus i's block
        size = (k.unsqueeze(0) == k_e.unsqueeze(1)).sum(1).to(phi.dtype)  # (S,) block sizes
        t, t_next = ge @ b, gt @ b  # (S,), (S,)
        log_p = a.sum() + ((t_next - _log1mexp(t)) / size).sum()
        if bool((k == 0).any()):
            log_p = log_p + b[k > 0].sum() - _log1mexp(b.sum())
        else:
            log_p = log_p - b.sum()  # no zero block: the first expressed block is B_1
        losses.append(-log_p)
    return torch.stack(losses)


def make_inputs(cells: int, genes: int, expressed: int, seed: int = 0):
    """Random logits, counts with exactly ``expressed`` nonzero genes per cell, 95% observable."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(cells, genes, generator=g) * 2  # (B, V)
    counts = torch.zeros(cells, genes)  # (B, V)
    mask = torch.rand(cells, genes, generator=g) < 0.95  # (B, V)
    for r in range(cells):
        obs = mask[r].nonzero().squeeze(1)
        idx = obs[torch.randperm(obs.numel(), generator=g)[:expressed]]
        geo = torch.distributions.Geometric(probs=torch.full((idx.numel(),), 0.2))
        counts[r, idx] = geo.sample() + 1  # heavy ties, like UMI counts
    return logits, counts, mask


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=32)
    ap.add_argument("--genes", type=int, default=36_000)
    ap.add_argument("--expressed", type=int, default=5_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dense-repeats", type=int, default=1)
    ap.add_argument(
        "--dense-cells",
        type=int,
        default=4,
        help="cells timed for (a); its time is scaled by cells / dense-cells (per-cell loop)",
    )
    ap.add_argument("--csv", default=None, help="append the result row to this CSV file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    logits, counts, mask = make_inputs(args.cells, args.genes, args.expressed)
    target = torch.log1p(counts)  # (B, V)
    pred = torch.rand_like(logits) * 5  # (B, V)

    def run_gpl():
        x = logits.detach().requires_grad_(True)
        gpl_nll(x, counts, mask).sum().backward()

    def run_poisson():
        x = pred.detach().requires_grad_(True)
        poisson_nll(x, target, mask).sum().backward()

    nd = min(args.dense_cells, args.cells)
    scale = args.cells / nd

    def run_dense():
        x = logits[:nd].detach().requires_grad_(True)
        gpl_nll_dense(x, counts[:nd], mask[:nd]).sum().backward()

    # correctness at this shape first (float64, two cells)
    sub = slice(0, 2)
    ref = gpl_nll_dense(logits[sub].double(), counts[sub], mask[sub])
    got = gpl_nll(logits[sub].double(), counts[sub], mask[sub])
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-6), (got, ref)

    for _ in range(3):
        run_gpl(), run_poisson()
    res = {"gpl": [], "poisson": [], "dense": []}
    for i in range(args.repeats):
        res["gpl"].append(_timed(run_gpl))
        res["poisson"].append(_timed(run_poisson))
        if i < args.dense_repeats:
            res["dense"].append(_timed(run_dense))
    nan = float("nan")
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        if v
        else (nan, nan)
        for k, v in res.items()
    }
    med["dense"] = (med["dense"][0] * scale, med["dense"][1] * scale)  # per-cell loop: linear in B
    print(
        f"B={args.cells} V={args.genes} S={args.expressed} threads={args.threads} "
        f"repeats={args.repeats} (dense: {args.dense_repeats} x {nd} cells, scaled x{scale:g}); "
        "forward+backward, median"
    )
    print(f"{'':>10} {'wall ms':>10} {'cpu ms':>10}")
    for k, (w, c) in med.items():
        print(f"{k:>10} {w * 1e3:10.1f} {c * 1e3:10.1f}")
    ratios = {
        "dense_over_gpl_wall": med["dense"][0] / med["gpl"][0],
        "dense_over_gpl_cpu": med["dense"][1] / med["gpl"][1],
        "gpl_over_poisson_wall": med["gpl"][0] / med["poisson"][0],
        "gpl_over_poisson_cpu": med["gpl"][1] / med["poisson"][1],
    }
    for k, v in ratios.items():
        print(f"{k:>24}: {v:8.2f}")
    met_a = min(ratios["dense_over_gpl_wall"], ratios["dense_over_gpl_cpu"]) >= 20
    met_b = max(ratios["gpl_over_poisson_wall"], ratios["gpl_over_poisson_cpu"]) <= 3
    print(
        f"target (a) >= 20x faster than dense: {'MET' if met_a else 'NOT MET'}; "
        f"target (b) within 3x of poisson: {'MET' if met_b else 'NOT MET'}"
    )
    if args.csv:
        import csv
        import os

        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(
                    [
                        "cells",
                        "genes",
                        "expressed",
                        "threads",
                        "gpl_ms",
                        "poisson_ms",
                        "dense_ms",
                        *ratios,
                    ]
                )
            w.writerow(
                [
                    args.cells,
                    args.genes,
                    args.expressed,
                    args.threads,
                    med["gpl"][0] * 1e3,
                    med["poisson"][0] * 1e3,
                    med["dense"][0] * 1e3,
                    *ratios.values(),
                ]
            )


if __name__ == "__main__":
    main()
