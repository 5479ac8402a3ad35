"""Loader throughput of each count store vs the model's training consumption (issue 13).

For N cells resampled from the bundled BALF counts (``_resampled.py``) the same corpus is opened
as each store — in-memory CSR, backed ``.h5ad``, the ``tfmkit prepare`` sharded store and a
TileDB-SOMA experiment (when ``tiledbsoma`` is installed) — and the training loader
(:func:`tfmkit.data.corpus.make_dataloader` with the run's own collator, block-shuffled for the
on-disk stores, ``num_workers=0``: one core) is timed over ``--batches`` batches. The model's
consumption is the cells/s of full training steps (forward, backward, AdamW) of the preset at K
on fixed batches. The ratio loader / model should be >= 10 (the loader then costs <= 10% of a
step even without workers). Prints JSON lines and ``uptime``.

Usage::

    python benchmarks/loader_throughput.py --cells 100000 --preset tiny --k 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _loader_rate(store, collate, batches: int, batch_size: int) -> float:
    from tfmkit.data.corpus import make_dataloader

    train, _ = store.split(0.05, seed=0)
    it = iter(make_dataloader(store, train, batch_size=batch_size, seed=0, collate=collate))
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def _model_rate(cfg, store, collate, steps: int) -> float:
    import torch

    from tfmkit.data.corpus import make_dataloader
    from tfmkit.training import build_training, training_loss

    state = build_training(cfg, store.vocab.n_genes, torch.device("cpu"), store.vocab)
    train, _ = store.split(0.05, seed=0)
    it = iter(make_dataloader(store, train, batch_size=cfg.train.batch_size, seed=0, collate=collate))
    batches = [next(it) for _ in range(4)]
    state.model.train()

    def step(b):
        state.optimizer.zero_grad(set_to_none=True)
        training_loss(state, b).backward()
        state.optimizer.step()

    step(batches[0])
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % 4])
    return steps * cfg.train.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--work", default="/tmp/tfm_scale")
    p.add_argument("--stores", nargs="+", default=["memory", "backed", "sharded", "soma"])
    a = p.parse_args()
    from _resampled import write_resampled_h5ad

    from tfmkit.config import load_config
    from tfmkit.data.sources import open_corpus
    from tfmkit.tasks import build_task

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    name = f"balf_{a.cells // 1000}k"
    h5 = write_resampled_h5ad(work / f"{name}.h5ad", a.cells)
    cfg = load_config(f"txfm_{a.preset.lower()}", [f"data.n_revealed={a.k}", "train.batch_size=32"])
    rates = {}
    for kind in a.stores:
        t0 = time.perf_counter()
        if kind == "memory":
            store = open_corpus([h5], min_cells=10, max_in_memory_gb=1e3)
        elif kind == "backed":
            store = open_corpus([h5], min_cells=10, max_in_memory_gb=0)
        elif kind == "sharded":
            from tfmkit.data.stores.writer import write_store

            path = work / f"{name}.store"
            if not path.exists():
                write_store([h5], path, min_cells=10)
            store = open_corpus([path])
        else:
            try:
                import tiledbsoma.io
            except ImportError:
                print(json.dumps({"store": "soma", "skipped": "tiledbsoma not installed"}))
                continue
            import anndata as ad

            from tfmkit.data.stores.soma import SomaStore

            uri = work / f"{name}.soma"
            if not uri.exists():
                tiledbsoma.io.from_anndata(str(uri), ad.read_h5ad(h5), measurement_name="RNA")
            store = SomaStore.open(uri, min_cells=10)
        opened = time.perf_counter() - t0
        collate = build_task(cfg, store.vocab.n_genes).collator(store)
        rates[kind] = _loader_rate(store, collate, a.batches, 32)
        if "model" not in rates:
            rates["model"] = _model_rate(cfg, store, collate, a.steps)
            print(json.dumps({"model": f"txfm_{a.preset}", "K": a.k, "train_cells_per_s": round(rates["model"], 1),
                              "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}),
                  flush=True)
        print(json.dumps({"store": kind, "cells": store.n_cells, "open_s": round(opened, 1),
                          "loader_cells_per_s": round(rates[kind], 1),
                          "ratio_vs_model": round(rates[kind] / rates["model"], 1),
                          "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}),
              flush=True)
        del store


if __name__ == "__main__":
    main()
