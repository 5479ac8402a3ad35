"""Peak RSS of pretraining and embedding vs corpus size (issue 13, benchmarks).

- ``pretrain``: ``tfmkit pretrain`` (TxFM-tiny, 20 steps, batch 32, K=256) on a corpus of N
  cells resampled from the bundled BALF counts, read from an ``.h5ad`` larger than the memory
  budget (``data.max_in_memory_gb`` < file size, so the backed store is used), or from a
  ``tfmkit prepare`` store (``--store``). Each run is a fresh process; its peak RSS is
  ``ru_maxrss`` of that child.
- ``embed``: :func:`tfmkit.streaming.embed_h5ad` of N cells with a tiny model: cells/s and peak RSS.

Usage::

    python benchmarks/memory_scaling.py pretrain --cells 10000 1000000 [--store]
    python benchmarks/memory_scaling.py embed --cells 10000 100000 [--n-revealed 16]

Files go to ``--work`` (default /tmp/tfm_scale). Prints one line per size, ``uptime``, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _child_pretrain(data: str, out: str, budget_gb: float) -> dict:
    from tfmkit.config import load_config
    from tfmkit.training import pretrain

    cfg = load_config("txfm_tiny", ["train.steps=20", "train.batch_size=32", "data.n_revealed=256",
                                    "train.val_every=0", "train.checkpoint_every=20", "train.log_every=10"])
    cfg.data.paths = [data]
    cfg.data.max_in_memory_gb = budget_gb  # DataConfig field (read with getattr until added)
    t0 = time.perf_counter()
    pretrain(cfg, out, progress=False)
    return {"wall_s": time.perf_counter() - t0}


def _child_embed(data: str, model: str, out: str, k: str) -> dict:
    import tfmkit
    from tfmkit.streaming import embed_h5ad

    m = tfmkit.load_model(model)
    t0 = time.perf_counter()
    info = embed_h5ad(data, m, out, batch_size=256, n_revealed=int(k) if int(k) > 0 else None)
    return {"wall_s": time.perf_counter() - t0, "n_cells": info["n_cells"]}


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), TFMKIT_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["pretrain", "embed", "_child"])
    p.add_argument("--cells", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--work", default="/tmp/tfm_scale")
    p.add_argument("--store", action="store_true", help="pretrain from a `tfmkit prepare` store")
    p.add_argument("--budget-gb", type=float, default=0.05, help="data.max_in_memory_gb for the runs")
    p.add_argument("--n-revealed", type=int, default=0, help="embed: K (default: the model's, 256)")
    p.add_argument("child", nargs="*")
    a = p.parse_args()
    if a.what == "_child":
        kind, *rest = a.child
        res = _child_pretrain(rest[0], rest[1], float(rest[2])) if kind == "pretrain" else _child_embed(*rest)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    from _resampled import write_resampled_h5ad

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    model = None
    for n in a.cells:
        name = f"balf_{n // 1000}k" if n < 1_000_000 else f"balf_{n // 1_000_000}m"
        data = write_resampled_h5ad(work / f"{name}.h5ad", n)
        if a.what == "pretrain":
            if a.store:
                from tfmkit.data.stores.writer import write_store

                store = work / f"{name}.store"
                if not store.exists():
                    t0 = time.perf_counter()
                    write_store([data], store, min_cells=10)
                    print(f"prepared {store} in {time.perf_counter() - t0:.0f} s", flush=True)
                data = store
            with tempfile.TemporaryDirectory(dir=work) as run:
                res = _run_child(["pretrain", str(data), str(Path(run) / "run"), str(a.budget_gb)])
        else:
            if model is None:
                model = work / "embed_model"
                if not (model / "model").exists():
                    from tfmkit.config import load_config
                    from tfmkit.training import pretrain

                    cfg = load_config("txfm_tiny", ["train.steps=2", "train.val_every=0"])
                    pretrain(cfg, model, progress=False)
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                res = _run_child(["embed", str(data), str(model / "model"), str(Path(tmp) / "out.h5ad"),
                                   str(a.n_revealed)])
                res["cells_per_s"] = res["n_cells"] / res["wall_s"]
        res["cells"] = n
        res["uptime"] = _uptime()
        rows.append(res)
        print(json.dumps(res), flush=True)
    base, big = rows[0], rows[-1]
    print(f"{a.what}: peak RSS {big['peak_rss_mb']:.0f} MB at {big['cells']} cells vs "
          f"{base['peak_rss_mb']:.0f} MB at {base['cells']} cells: ratio {big['peak_rss_mb'] / base['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
