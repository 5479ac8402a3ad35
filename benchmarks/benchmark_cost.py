"""Wall time and peak RSS of the benchmark commands on 5k cells x 20k genes (issue 13, item 5).

Target: each `tfmkit benchmark ...` command <= 2 min and <= 2 GB peak RSS on 5,000 cells x
20,000 genes on 2 cores, run as a new user would (default options).

1. Data: 5,000 cells resampled with replacement (seeded) from the QC-passing bundled BALF
   counts (Liao et al. 2020), restricted to the 20,000 most detected of its 24,290 genes, with
   ``obs`` columns ``patient`` (batch) and ``cell_type`` (the bundled marker-derived labels).
2. Model: TxFM-tiny (``configs/txfm_tiny.yaml``) pretrained for ``--steps`` steps on those
   cells (cost is what is measured here, not quality), then ``tfmkit embed`` writes
   ``obsm['X_tfmkit']``.
3. Each command runs in its own process under ``/usr/bin/time -v`` (wall time, maximum
   resident set size of the process and its children) with ``OMP_NUM_THREADS`` (default 2).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/benchmark_cost.py [--work /tmp/tfm_cost] [--timeout 900]
        [--only pretraining genes celltype-fast celltype] [--extra "celltype=--max-cells 2000"]

Prints one row per command, a markdown table and ``uptime`` (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

N_CELLS, N_GENES = 5_000, 20_000


def build_data(path: Path, *, seed: int = 0) -> Path:
    """Write the 5k x 20k resampled-real-counts ``.h5ad`` (skipped when present)."""
    if path.is_file():
        return path
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from tfmkit.datasets import load_corpus

    parts = load_corpus(("balf",), qc=True)
    X = sp.vstack([a.X for a in parts.values()]).tocsr()
    obs = pd.concat([a.obs for a in parts.values()])
    detected = np.asarray((X > 0).sum(0)).ravel()  # (G,)
    genes = np.sort(np.argsort(-detected, kind="stable")[:N_GENES])  # (20000,)
    rows = np.random.default_rng(seed).integers(0, X.shape[0], N_CELLS)  # (5000,)
    var = next(iter(parts.values())).var.iloc[genes][[]].copy()
    new_obs = pd.DataFrame({"patient": pd.Categorical(obs["patient"].to_numpy()[rows].astype(str)),
                            "cell_type": pd.Categorical(obs["cell_type_derived"].to_numpy()[rows].astype(str))},
                           index=pd.Index([f"cell{i}" for i in range(N_CELLS)]))
    adata = ad.AnnData(X=X[rows][:, genes].astype(np.float32).tocsr(), obs=new_obs, var=var)
    tmp = path.with_name(path.name + ".tmp.h5ad")
    adata.write_h5ad(tmp)
    os.replace(tmp, path)
    print(f"wrote {path}: {adata.n_obs} cells x {adata.n_vars} genes, "
          f"{adata.X.nnz / adata.n_obs:.0f} expressed genes per cell", flush=True)
    return path


def build_model(work: Path, data: Path, steps: int) -> Path:
    """Pretrain TxFM-tiny for ``steps`` steps on ``data`` (skipped when present)."""
    run = work / "model_run"
    if (run / "model" / "model.safetensors").exists():
        return run / "model"
    import anndata as ad

    from tfmkit.config import load_config
    from tfmkit.training import pretrain

    cfg = load_config("txfm_tiny", [f"train.steps={steps}", "train.val_every=0",
                                    f"train.checkpoint_every={steps}", "train.log_every=1"])
    return pretrain(cfg, run, adatas={"cost": ad.read_h5ad(data)}, progress=False)


def _tree_rss_mb(root: int) -> float:
    """Resident memory (MB) of process ``root`` and all its descendants, from ``/proc``."""
    parent, rss = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(p, 0.0) for p in tree)


def measure(cmd: list[str], timeout: float, max_rss_mb: float) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS (MB), exit code. The
    command is stopped after ``timeout`` s or once its process tree holds more than
    ``max_rss_mb`` (a shared machine must not run out of memory)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               TFMKIT_NO_PROGRESS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    stopped, seen = None, 0.0
    while proc.poll() is None:
        seen = max(seen, _tree_rss_mb(proc.pid))
        if seen > max_rss_mb:
            stopped = f"stopped >{max_rss_mb:.0f} MB"
        elif time.perf_counter() - t0 > timeout:
            stopped = f"stopped >{timeout:.0f} s"
        if stopped:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.25)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    peak = int(rss.group(1)) / 1024 if rss else seen
    rc = stopped or proc.returncode
    return {"wall_s": wall, "peak_rss_mb": max(peak, seen), "rc": rc,
            "tail": "" if rc == 0 else err.split("\tCommand being timed")[0][-1500:]}


def commands(work: Path, data: Path, emb: Path, model: Path, extra: dict[str, list[str]]) -> dict:
    tfm = [sys.executable, "-m", "tfmkit.cli"]
    out = lambda name: ["--out", str(work / f"out_{name}"), "--overwrite"]  # noqa: E731
    return {
        "celltype": tfm + ["benchmark", "celltype", "--input", str(emb), "--obsm", "X_tfmkit",
                           "--label-key", "cell_type", "--batch-key", "patient"] + out("celltype")
                    + extra.get("celltype", []),
        "celltype-fast": tfm + ["benchmark", "celltype", "--input", str(emb), "--obsm", "X_tfmkit",
                                "--label-key", "cell_type", "--batch-key", "patient", "--fast"]
                         + out("celltype_fast") + extra.get("celltype-fast", []),
        "pretraining": tfm + ["benchmark", "pretraining", "--model", str(model), "--input", str(data)]
                       + out("pretraining") + extra.get("pretraining", []),
        "genes": tfm + ["benchmark", "genes", "--model", str(model), "--input", str(data)]
                 + out("genes") + extra.get("genes", []),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="/tmp/tfm_cost")
    p.add_argument("--steps", type=int, default=5, help="pretraining steps of the tiny model")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per command before it is stopped")
    p.add_argument("--max-rss-mb", type=float, default=6000.0, help="MB at which a command is stopped")
    p.add_argument("--only", nargs="+", default=["pretraining", "genes", "celltype-fast", "celltype"],
                   choices=["pretraining", "genes", "celltype-fast", "celltype"])
    p.add_argument("--extra", action="append", default=[],
                   help="NAME=ARGS extra options for one command, e.g. celltype='--max-cells 2000'")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work / "cells5k_genes20k.h5ad")
    model = build_model(work, data, a.steps)
    emb = work / "cells5k_genes20k_emb.h5ad"
    if not emb.exists():
        res = measure([sys.executable, "-m", "tfmkit.cli", "embed", "--model", str(model), "--input",
                       str(data), "--output", str(emb)], a.timeout, a.max_rss_mb)
        print(f"embed: {res['wall_s']:.0f} s, {res['peak_rss_mb']:.0f} MB", flush=True)
        if res["rc"] != 0:
            raise SystemExit(res["tail"])
    extra = {}
    for item in a.extra:
        name, _, args = item.partition("=")
        extra[name] = shlex.split(args)
    cmds = commands(work, data, emb, model, extra)
    rows = []
    for name in a.only:
        load = os.getloadavg()[0]
        res = measure(cmds[name], a.timeout, a.max_rss_mb)
        res["load_before"] = load
        shown = "celltype --fast" if name == "celltype-fast" else name
        res["command"] = f"benchmark {shown} {' '.join(extra.get(name, []))}".strip()
        rows.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "tail"}), flush=True)
        if res["tail"]:
            print(res["tail"], flush=True)
    threads = os.environ.get("OMP_NUM_THREADS", "2")
    print(f"\n{N_CELLS} cells x {N_GENES} genes, OMP_NUM_THREADS={threads}; target <= 120 s, <= 2048 MB\n")
    print("| command | wall (s) | peak RSS (MB) | exit | 1-min load before |")
    print("|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| `{r['command']}` | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['rc']} | "
              f"{r['load_before']:.1f} |")
    print("\n" + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
