"""Training throughput and model FLOP utilisation (MFU) of TxFM presets.

For each preset and K (revealed genes), times full training steps (forward + Poisson loss +
backward + AdamW) on synthetic batches and reports:

* cells/s;
* achieved GFLOP/s, with FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
  real step (not a formula);
* MFU = achieved GFLOP/s divided by the peak fp32 GEMM rate measured in the same run (a square
  1024 x 1024 ``torch.mm``, measured before and after the cases; the larger is used), for the
  whole step and for the transformer blocks alone (``blocks``: forward + backward of the encoder
  on ``(B, K, D)`` tokens).

Usage: ``python benchmarks/train_throughput.py [--presets tiny S] [--ks 256 512 2048]``.
Absolute numbers depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tfmkit.data import keys as K
from tfmkit.models import build_model
from tfmkit.objectives import poisson_nll


def matmul_gflops(n: int, seconds: float = 1.5) -> float:
    """Measured fp32 GEMM rate (GFLOP/s) for ``n x n @ n x n`` on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def synthetic_batch(B: int, Kr: int, G: int, gen: torch.Generator) -> dict:
    ids = torch.stack([torch.randperm(G, generator=gen)[:Kr] for _ in range(B)]) + 4  # (B, K)
    return {K.GENE_IDS: ids, K.VALUES: torch.rand(B, Kr, generator=gen) * 5,
            K.PADDING: torch.zeros(B, Kr, dtype=torch.bool),
            K.TARGET: torch.rand(B, G, generator=gen) * 3, K.OBSERVABLE: torch.ones(B, G, dtype=torch.bool)}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def time_fn(fn, min_seconds: float, min_reps: int = 2) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps


def bench(preset: str, Kr: int, B: int, G: int, seconds: float) -> dict:
    torch.manual_seed(0)
    model = build_model(preset, G)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(B, Kr, G, torch.Generator().manual_seed(0))

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(batch[K.GENE_IDS], batch[K.VALUES], batch[K.PADDING])
        poisson_nll(out["pred"], batch[K.TARGET], batch[K.OBSERVABLE]).mean().backward()
        opt.step()

    tokens = torch.randn(B, Kr, model.config.dim, requires_grad=True)

    def blocks():
        model.encoder(tokens).sum().backward()

    step_flops, block_flops = count_flops(step), count_flops(blocks)
    t_step, t_blocks = time_fn(step, seconds), time_fn(blocks, seconds)
    return dict(preset=preset, K=Kr, B=B, dim=model.config.dim, cells_per_s=B / t_step,
                step_gflops=step_flops / t_step / 1e9, block_gflops=block_flops / t_blocks / 1e9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "S"])
    ap.add_argument("--ks", nargs="+", type=int, default=[256, 512, 2048])
    ap.add_argument("--n-genes", type=int, default=20000, help="vocabulary size G")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per case")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, G = {args.n_genes}")
    ref = matmul_gflops(1024)
    print(f"reference: fp32 GEMM 1024^3 = {ref:.1f} GFLOP/s")
    rows = []
    for preset in args.presets:
        for Kr in args.ks:
            B = max(1, min(32, 8192 // Kr)) if preset == "tiny" else max(1, 2048 // Kr)
            rows.append(bench(preset, Kr, B, args.n_genes, args.seconds))
            r = rows[-1]
            print(f"{preset:>4} K={Kr:<5} B={B:<3} d={r['dim']:<4} {r['cells_per_s']:8.1f} cells/s | "
                  f"step {r['step_gflops']:6.1f} GFLOP/s | blocks {r['block_gflops']:6.1f} GFLOP/s",
                  flush=True)
    ref = max(ref, matmul_gflops(1024))
    print(f"\nMFU vs the peak fp32 GEMM rate measured in this run ({ref:.1f} GFLOP/s):")
    print("preset     K   width  cells/s   step MFU  blocks MFU")
    for r in rows:
        print(f"{r['preset']:>6} {r['K']:>5} {r['dim']:>6} {r['cells_per_s']:8.1f} "
              f"{r['step_gflops'] / ref:9.0%} {r['block_gflops'] / ref:10.0%}")

if __name__ == "__main__":
    main()
