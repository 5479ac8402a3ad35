"""Training throughput, model FLOP utilisation (MFU) and an op-level profile of TxFM presets.

Each case builds the model, task and optimiser of a shipped run config (``txfm_tiny`` for the
``tiny`` preset, ``txfm_s`` for ``S``) through :func:`tfmkit.training.build_training`, in fp32
on the CPU, and times full training steps on a synthetic batch exactly as the training loop
runs them: ``model(batch)`` -> ``task.loss`` (Poisson NLL over all ``G`` genes) -> backward ->
gradient clipping -> AdamW. Reported per preset and ``K`` (revealed genes):

* cells/s (wall clock);
* achieved GFLOP/s, FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real
  step (not a formula);
* MFU = achieved GFLOP/s / the fp32 GEMM rate of a square 1024 x 1024 ``torch.mm`` measured in
  the same run (before and after the cases; the larger is used), for the whole step (``step``)
  and for the transformer blocks alone (``blocks``: forward + backward of the encoder on
  ``(B, K, D)`` tokens).

``--profile`` (one preset and ``K``) runs ``torch.profiler`` over a few steps and prints the
share of the step's CPU time per op category (self time; the optimiser, clipping and the loss,
forward and backward, are attributed by phase: backward ops follow their forward op's autograd
sequence number), the GFLOP/s the GEMMs and the attention kernels achieve inside the step, and
each GEMM shape of the step timed in isolation (in the step's layout, where ``Linear``'s
backward passes transposed views, and contiguous) against the 1024^3 reference.

FLOPs: ``FlopCounterMode`` has no formula for the CPU flash-attention kernels and silently
leaves attention out (about a quarter of tiny's FLOPs at K = 256); this script adds them
(forward ``4 B H T^2 Dh``, backward twice that). Rates are per second of process CPU time by
default (``--clock cpu``, for a shared machine: time slices given to other jobs do not count;
cells/s stays wall clock).

``--levers`` (one preset and ``K``) times variants of the same step that leave the model's
numerics alone (twice the batch, ``torch.compile`` of the model, fused / foreach AdamW, oneDNN
disabled, the math SDPA backend) against the shipped step, interleaved in rounds so that load
from other jobs hits every variant alike; it prints each variant's speed-up per cell (median
over rounds of the per-round ratio, and the ratio of the fastest rounds).

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --threads 1 --presets tiny --ks 256
    (add --profile or --levers for the two analyses of that case)

``--batch`` overrides the cells per step (default: 32 for tiny up to K = 256, then fewer so
that B * K <= 8192; 2048 / K for S). The load average (``uptime``) is printed before and
after, since the machine may be shared: compare only ratios measured in the same run.
Findings: ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import time
from collections import defaultdict

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from tfmkit.data import keys as K

CONFIGS = {"tiny": "txfm_tiny", "S": "txfm_s"}
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"}
#: Op category -> substrings of ``aten::`` op names (first match wins; order matters).
CATEGORIES = [
    ("GEMM (mm/addmm/bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv",
                             "aten::addmv")),
    ("SDPA (attention kernel)", ("scaled_dot_product", "flash_attention")),
    ("layernorm", ("layer_norm",)),
    ("GELU / activation", ("gelu", "relu", "tanh", "threshold", "sigmoid")),
    ("softmax", ("softmax",)),
    ("embedding / gather / scatter", ("embedding", "index_select", "gather", "scatter", "index_add",
                                      "index_put", "_index_put_impl", "masked_scatter")),
    ("copies / cat / index", ("copy_", "cat", "clone", "contiguous", "stack", "_unsafe_view",
                              "index", "narrow_copy", "_to_copy")),
    ("elementwise / reduction", ("add", "mul", "div", "sub", "exp", "log", "sum", "mean", "where",
                                 "pow", "sqrt", "neg", "fill_", "zero_", "zeros", "ones", "lerp",
                                 "clamp", "norm", "rsqrt", "maximum", "minimum", "reciprocal")),
]
#: The clock of the rates and MFU (``--clock``): process CPU time by default, so that time slices
#: the OS gives to other jobs on a shared machine do not count; cells/s is always wall clock.
CLOCK = [time.process_time]
PHASES = {"tfm::optimizer": "optimizer (AdamW step)", "tfm::clip": "grad clipping",
          "tfm::loss": "loss (Poisson NLL, fwd + bwd)", "tfm::zero_grad": "zero_grad"}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _operand(shape: tuple, transposed: bool) -> torch.Tensor:
    """Random fp32 tensor of ``shape``, stored transposed in its last two dims if asked."""
    if not transposed:
        return torch.randn(*shape)
    return torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)


def gemm_gflops(m: int, k: int, n: int, seconds: float = 1.0, batch: int = 0,
                layout: tuple[bool, bool] = (False, False)) -> float:
    """Measured fp32 rate (GFLOP/s of :data:`CLOCK`) of ``(m, k) @ (k, n)`` (``batch`` > 0: a
    ``bmm`` of that many); ``layout``: whether each operand is a transposed view (as in
    ``Linear``'s forward/backward)."""
    lead = (batch,) if batch else ()
    a, b = _operand((*lead, m, k), layout[0]), _operand((*lead, k, n), layout[1])
    out = torch.empty(*lead, m, n)
    mm = torch.bmm if batch else torch.mm
    for _ in range(3):
        mm(a, b, out=out)
    reps, t0, c0 = 0, time.perf_counter(), CLOCK[0]()
    while reps < 3 or time.perf_counter() - t0 < seconds:
        mm(a, b, out=out)
        reps += 1
    return 2 * max(batch, 1) * m * k * n * reps / (CLOCK[0]() - c0) / 1e9


def synthetic_batch(B: int, Kr: int, G: int, gen: torch.Generator) -> dict:
    """A pretraining batch of ``B`` cells revealing ``Kr`` distinct genes each out of ``G``."""
    ids = torch.stack([torch.randperm(G, generator=gen)[:Kr] for _ in range(B)]) + 4  # (B, K)
    return {K.GENE_IDS: ids, K.VALUES: torch.rand(B, Kr, generator=gen) * 5,  # (B, K)
            K.PADDING: torch.zeros(B, Kr, dtype=torch.bool),  # (B, K)
            K.TARGET: torch.rand(B, G, generator=gen) * 3,  # (B, G)
            K.OBSERVABLE: torch.ones(B, G, dtype=torch.bool)}  # (B, G)


def build_step(preset: str, Kr: int, B: int, G: int, compile_model: bool = False,
               labels: bool = False):
    """``(step, state, batch)``: one training step of the shipped config of ``preset``
    (``labels``: mark its phases with ``record_function`` for the profiler)."""
    from tfmkit.config import load_config
    from tfmkit.training import build_training

    cfg = load_config(CONFIGS[preset], [f"data.n_revealed={Kr}", f"train.batch_size={B}",
                                        "train.device=cpu", "train.precision=fp32"])
    state = build_training(cfg, G, torch.device("cpu"))
    state.model.train()
    batch = synthetic_batch(B, Kr, G, torch.Generator().manual_seed(0))
    clip = list(state.model.parameters()) + list(state.task.parameters())
    forward = torch.compile(state.model) if compile_model else state.model
    label = record_function if labels else (lambda name: contextlib.nullcontext())

    def step() -> float:
        with label("tfm::zero_grad"):
            state.optimizer.zero_grad(set_to_none=True)
        out = forward(batch)
        with label("tfm::loss"):
            loss = state.task.loss(out, batch).mean()
        loss.backward()
        if cfg.train.grad_clip:
            with label("tfm::clip"):
                torch.nn.utils.clip_grad_norm_(clip, cfg.train.grad_clip)
        with label("tfm::optimizer"):
            state.optimizer.step()
        return float(loss.detach())

    return step, state, batch


#: FlopCounterMode has no formula for the CPU flash-attention kernels: without these, attention
#: (25% of tiny's FLOPs at K = 256) is silently left out of the count. Backward: model FLOPs
#: (dQ, dK, dV, dP = twice the forward), not the kernel's recomputation.
SDPA_CPU_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda g, q, k, v, *a, out_shape=None, **kw: 2 * sdpa_flop_count(q, k, v)}


def count_flops(fn) -> tuple[int, int]:
    """FLOPs of one call of ``fn`` (``FlopCounterMode``, CPU attention kernels included) and
    the attention kernels' part of them."""
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FLOPS) as fc:
        fn()
    counts = fc.get_flop_counts()["Global"]
    return fc.get_total_flops(), sum(v for k, v in counts.items() if "attention" in str(k))


def time_fn(fn, min_seconds: float, min_reps: int = 2, warmup: int = 1) -> tuple[float, float]:
    """Seconds per call of ``fn``: (wall clock, :data:`CLOCK`)."""
    for _ in range(warmup):
        fn()
    reps, t0, c0 = 0, time.perf_counter(), CLOCK[0]()
    while reps < min_reps or time.perf_counter() - t0 < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps, (CLOCK[0]() - c0) / reps


def bench(preset: str, Kr: int, B: int, G: int, seconds: float) -> dict:
    """Cells/s and GFLOP/s of the step and of the encoder blocks for one case."""
    step, state, _ = build_step(preset, Kr, B, G)
    dim = state.model.config.dim
    tokens = torch.randn(B, Kr, dim, requires_grad=True)  # (B, K, D)

    def blocks():
        state.model.encoder(tokens).sum().backward()

    step()  # allocate the optimiser state before counting
    step_flops, attn_flops = count_flops(step)
    block_flops = count_flops(blocks)[0]
    wall, t_step = time_fn(step, seconds)
    t_blocks = time_fn(blocks, seconds)[1]
    return dict(preset=preset, K=Kr, B=B, dim=dim, t_step=t_step, cells_per_s=B / wall,
                cells_per_clock_s=B / t_step,
                step_flops=step_flops, attn_flops=attn_flops,
                step_gflops=step_flops / t_step / 1e9,
                block_gflops=block_flops / t_blocks / 1e9)


def default_batch(preset: str, Kr: int) -> int:
    return max(1, min(32, 8192 // Kr)) if preset == "tiny" else max(1, 2048 // Kr)


# --------------------------------------------------------------------------- profile
def op_category(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other ops (views, dispatch, allocation)"


def _phase(ev, loss_seq: set[int]) -> str | None:
    """Phase label of event ``ev`` from its ancestors (``None``: categorise by op name)."""
    e = ev
    while e is not None:
        if e.name in PHASES:
            return PHASES[e.name]
        if e.name.startswith("autograd::engine::evaluate_function") and e.sequence_nr in loss_seq:
            return PHASES["tfm::loss"]
        e = e.cpu_parent
    return None


def profile_step(preset: str, Kr: int, B: int, G: int, steps: int = 3) -> None:
    """Print the share of step time per op category, GEMM GFLOP/s in the step and in isolation."""
    ref0 = gemm_gflops(1024, 1024, 1024, 1.5)
    step, _, _ = build_step(preset, Kr, B, G, labels=True)
    t_plain = time_fn(step, 2.0)[1]
    w0, c0 = time.perf_counter(), CLOCK[0]()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        for _ in range(steps):
            with record_function("tfm::step"):
                step()
    scale = (CLOCK[0]() - c0) / (time.perf_counter() - w0)  # profiler times are wall clock
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    loss_seq = set()
    for e in events:  # forward ops under tfm::loss carry the sequence numbers of their backward
        p = e.cpu_parent
        while p is not None and p.name != "tfm::loss":
            p = p.cpu_parent
        if p is not None and e.sequence_nr >= 0:
            loss_seq.add(e.sequence_nr)
    share, ops = defaultdict(float), defaultdict(float)  # category / op name -> self us
    gemm_flops, gemm_us, sdpa_flops, sdpa_us = 0, 0.0, 0, 0.0
    shapes = defaultdict(lambda: [0, 0.0])  # (op, shapes) -> [calls, self us]
    total = sum(e.cpu_time_total for e in events if e.name == "tfm::step") * scale
    for e in events:
        phase = None if e.name == "tfm::step" else _phase(e, loss_seq)
        if phase is None and not e.name.startswith("aten::"):
            cat = "Python / autograd overhead"  # autograd::engine nodes, the step frame
        else:
            cat = phase or op_category(e.name)
        us = e.self_cpu_time_total * scale
        share[cat] += us
        ops[(phase.split()[0] + ":" if phase else "") + e.name.removeprefix("aten::")] += us
        if e.name in GEMM_OPS and phase is None:
            gemm_flops += e.flops or 0
            gemm_us += us
            mats = [(tuple(d), len(st) >= 2 and st[-2] == 1 and d[-1] > 1)  # (shape, transposed)
                    for d, st in zip(e.input_shapes, e.structured_input_strides) if len(d) >= 2]
            shapes[(e.name, tuple(mats))][0] += 1
            shapes[(e.name, tuple(mats))][1] += us
        if "flash_attention_for_cpu" in e.name:
            q = e.input_shapes[1 if e.name.endswith("backward") else 0]  # (B, H, T, Dh)
            fwd = 4 * q[0] * q[1] * q[2] ** 2 * q[3]
            sdpa_flops += 2 * fwd if e.name.endswith("backward") else fwd
            sdpa_us += us
    ref = max(ref0, gemm_gflops(1024, 1024, 1024, 1.5))
    print(f"\nprofile of {preset} K={Kr} B={B} G={G}: {steps} steps, {total / steps / 1e3:.0f} ms/step "
          f"under the profiler ({t_plain * 1e3:.0f} ms without); times in {CLOCK[0].__name__} "
          f"(profiler wall times x {scale:.2f}, the clock/wall ratio of the profiled steps)")
    print(f"{'category':<34}{'share':>7}{'ms/step':>9}")
    for cat, us in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"{cat:<34}{us / total:7.1%}{us / steps / 1e3:9.1f}")
    print("top ops:", ", ".join(f"{n} {us / total:.1%}"
                                for n, us in sorted(ops.items(), key=lambda kv: -kv[1])[:14]))
    print(f"SDPA (attention) kernels: {sdpa_flops / steps / 1e9:.2f} GFLOP/step in "
          f"{sdpa_us / steps / 1e3:.0f} ms -> {sdpa_flops / sdpa_us / 1e3:.1f} GFLOP/s = "
          f"{sdpa_flops / sdpa_us / 1e3 / ref:.0%} of the 1024^3 rate")
    print(f"GEMMs of the model (forward + backward, excluding loss/optimiser): "
          f"{gemm_flops / steps / 1e9:.2f} GFLOP/step in {gemm_us / steps / 1e3:.0f} ms -> "
          f"{gemm_flops / gemm_us / 1e3:.1f} GFLOP/s = {gemm_flops / gemm_us / 1e3 / ref:.0%} of the "
          f"1024^3 rate ({ref:.1f} GFLOP/s)")
    print("\nGEMM shapes of the step (most time first; T = transposed operand), GFLOP/s in the step "
          "and alone\n(same layout; contiguous operands), and the isolated rate / the 1024^3 rate:")
    print(f"{'op':<7}{'shapes':<36}{'calls':>6}{'ms/step':>8}{'in step':>8}{'alone':>7}{'contig':>7}"
          f"{'alone/ref':>10}")
    for (op, mats), (calls, us) in sorted(shapes.items(), key=lambda kv: -kv[1][1])[:12]:
        (a, ta), (b, tb) = mats[-2], mats[-1]
        batch = a[0] if len(a) == 3 else 0
        m, k, n = a[-2], a[-1], b[-1]
        flops = 2 * max(batch, 1) * m * k * n
        alone = gemm_gflops(m, k, n, 0.5, batch, (ta, tb))
        contig = gemm_gflops(m, k, n, 0.5, batch)
        desc = " x ".join(f"{tuple(x)}{'T' if t else ''}" for x, t in ((a, ta), (b, tb)))
        print(f"{op[6:]:<7}{desc:<36}{calls // steps:>6}{us / steps / 1e3:8.1f}"
              f"{flops * calls / us / 1e3:8.1f}"
              f"{alone:7.1f}{contig:7.1f}{alone / ref:10.0%}")


# --------------------------------------------------------------------------- levers
#: Step variants that change no model numerics beyond fp32 rounding (``batch`` changes the
#: cells per step, so it is compared per cell): name -> options of :func:`lever_step`.
LEVERS = {
    "shipped step": {},
    "batch x2": {"batch_factor": 2},
    "torch.compile(model)": {"compile_model": True},
    "AdamW fused=True": {"adamw": {"fused": True}},
    "AdamW foreach=True": {"adamw": {"foreach": True}},
    "oneDNN disabled": {"ctx": lambda: torch.backends.mkldnn.flags(enabled=False)},
    "SDPA math backend": {"ctx": lambda: sdpa_kernel([SDPBackend.MATH])},
}


def lever_step(preset: str, Kr: int, B: int, G: int, batch_factor: int = 1,
               compile_model: bool = False, adamw: dict | None = None, ctx=None):
    """``(step, cells per step)`` of the shipped step changed by one lever."""
    step, state, _ = build_step(preset, Kr, B * batch_factor, G, compile_model)
    if adamw is not None:  # same groups and hyper-parameters, other implementation
        groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")}
                  for g in state.optimizer.param_groups]
        state.optimizer = torch.optim.AdamW(groups, **adamw)
    if ctx is None:
        return step, B * batch_factor

    def wrapped():
        with ctx():
            return step()

    return wrapped, B * batch_factor


def compare_levers(preset: str, Kr: int, B: int, G: int, rounds: int) -> None:
    """Print each lever's speed-up per cell over the shipped step (interleaved rounds)."""
    steps = {name: lever_step(preset, Kr, B, G, **opts) for name, opts in LEVERS.items()}
    for fn, _ in steps.values():  # compile, allocate the optimiser state
        fn(), fn()
    per_cell = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (fn, cells) in steps.items():
            per_cell[name].append(time_fn(fn, 1.0, warmup=0)[1] / cells)
    base = per_cell["shipped step"]
    print(f"\nlevers on {preset} K={Kr} B={B}: {CLOCK[0].__name__} per cell, {rounds} interleaved rounds")
    print("speed-up: median over rounds of the per-round ratio; best-of: ratio of the fastest "
          "rounds (other jobs only ever slow a round down)")
    print(f"{'variant':<24}{'ms/cell':>9}{'speed-up':>10}{'range over rounds':>20}{'best-of':>9}")
    for name, times in per_cell.items():
        ratios = sorted(b / t for b, t in zip(base, times))
        print(f"{name:<24}{statistics.median(times) * 1e3:9.2f}{statistics.median(ratios):10.3f}"
              f"{ratios[0]:>11.3f} - {ratios[-1]:.3f}{min(base) / min(times):9.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "S"], choices=sorted(CONFIGS))
    ap.add_argument("--ks", nargs="+", type=int, default=[256, 512, 2048])
    ap.add_argument("--batch", nargs="+", type=int, default=None, help="cells per step (each is a case)")
    ap.add_argument("--n-genes", type=int, default=20000, help="vocabulary size G")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per case")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--levers", action="store_true", help="speed-ups of step variants (first case)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds of --levers")
    ap.add_argument("--profile", action="store_true", help="op-category profile of the first case")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="clock of GFLOP/s and MFU: process CPU time (default; robust to other jobs "
                         "on a shared machine) or wall clock")
    args = ap.parse_args()
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    print("uptime before:", uptime())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, G = {args.n_genes}, "
          f"rates per {args.clock} second")
    if args.profile or args.levers:
        preset, Kr = args.presets[0], args.ks[0]
        B = (args.batch or [default_batch(preset, Kr)])[0]
        if args.profile:
            profile_step(preset, Kr, B, args.n_genes)
        if args.levers:
            compare_levers(preset, Kr, B, args.n_genes, args.rounds)
        print("uptime after:", uptime())
        return
    ref = gemm_gflops(1024, 1024, 1024, 1.5)
    print(f"reference: fp32 GEMM 1024^3 = {ref:.1f} GFLOP/s")
    rows = []
    for preset in args.presets:
        for Kr in args.ks:
            for B in args.batch or [default_batch(preset, Kr)]:
                r = bench(preset, Kr, B, args.n_genes, args.seconds)
                rows.append(r)
                print(f"{preset:>4} K={Kr:<5} B={B:<3} d={r['dim']:<4} {r['cells_per_s']:8.1f} cells/s | "
                      f"step {r['step_gflops']:6.1f} GFLOP/s | blocks {r['block_gflops']:6.1f} GFLOP/s",
                      flush=True)
    ref = max(ref, gemm_gflops(1024, 1024, 1024, 1.5))
    print(f"\nMFU vs the peak fp32 GEMM rate measured in this run ({ref:.1f} GFLOP/{args.clock} s); "
          f"'no attn' leaves the attention FLOPs out of the count, as FlopCounterMode alone does on CPU:")
    print(f"preset     K width    B cells/s cells/{args.clock}-s GFLOP/step attn  step MFU  "
          f"(no attn)  blocks MFU")
    for r in rows:
        no_attn = (r["step_flops"] - r["attn_flops"]) / r["t_step"] / 1e9 / ref
        print(f"{r['preset']:>6} {r['K']:>5} {r['dim']:>5} {r['B']:>4} {r['cells_per_s']:7.1f}"
              f"{r['cells_per_clock_s']:12.1f}{r['step_flops'] / 1e9:11.2f}"
              f"{r['attn_flops'] / r['step_flops']:5.0%}"
              f"{r['step_gflops'] / ref:10.0%}{no_attn:11.0%}{r['block_gflops'] / ref:12.0%}")
    print("uptime after:", uptime())


if __name__ == "__main__":
    main()
