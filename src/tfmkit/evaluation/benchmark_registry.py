"""Benchmark registry: every benchmark tfmkit runs, by name (SPEC §6).

A :class:`Benchmark` has a ``name``, a one-line ``description``, what it takes (``inputs``) and
a :meth:`Benchmark.run` that calls its runner and returns the long results table (SPEC §1).
Runners take arrays or AnnData — embedding cells with a model is the caller's job — and a
loaded model only where the benchmark measures the model itself (``pretraining``
reconstruction; ``genes`` reads the model's gene tables unless given ``representations``).
The demo, the ablation runner and ``tfmkit benchmark`` all go through :data:`BENCHMARKS`.

Add one with :func:`register_benchmark` (runner given as ``"module:function"``, imported when
it runs, so listing benchmarks stays cheap).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from tfmkit.registry import Registry


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark (see module doc)."""

    name: str
    description: str
    inputs: str
    runner: str  # "module:function"
    needs_model: bool = False

    def function(self) -> Callable[..., pd.DataFrame]:
        """The runner function (imported now)."""
        module, attr = self.runner.split(":")
        return getattr(importlib.import_module(module), attr)

    def run(self, *args, **kwargs) -> pd.DataFrame:
        """Run the benchmark; arguments are those of the runner (see its docstring)."""
        return self.function()(*args, **kwargs)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(name: str, *, description: str, inputs: str, runner: str,
                       needs_model: bool = False) -> Benchmark:
    """Add a :class:`Benchmark` to :data:`BENCHMARKS` and return it."""
    entry = Benchmark(name, description, inputs, runner, needs_model)
    BENCHMARKS.register(name)(entry)
    return entry


register_benchmark(
    "celltype", runner="tfmkit.evaluation.runners:benchmark_celltype",
    description="clustering, batch-integration and probe metrics of embeddings vs baselines (TxFM Table 4)",
    inputs="AnnData: raw counts (X, a layer or .raw), obs labels and/or batches, obsm embeddings")
register_benchmark(
    "knn", runner="tfmkit.evaluation.knn:benchmark_knn",
    description="zero-shot kNN label transfer (k = 10, stratified 5-fold CV)",
    inputs="{name: (cells, dims) array} and one label per cell")
register_benchmark(
    "genes", runner="tfmkit.evaluation.gene_benchmark:benchmark_genes", needs_model=True,
    description="gene-pair recall (TxFM §B.3), GRN AUROC and annotation LDA (GPL §2.3) of gene representations",
    inputs="a loaded model (its gene tables) or {name: genes x dims DataFrame}; AnnData for the PCA / co-expression baselines")
register_benchmark(
    "pretraining", runner="tfmkit.evaluation.runners:benchmark_pretraining", needs_model=True,
    description="held-out full-transcriptome Spearman / binary correctness, top-expressed context (GPL Suppl. D)",
    inputs="a loaded model and an AnnData of held-out raw counts")
register_benchmark(
    "perturbation", runner="tfmkit.evaluation.perturbation.runner:benchmark_perturbation",
    description="perturbation-representation benchmark, six tasks (TxFM Table 2)",
    inputs="AnnData: raw counts, obs perturbation / batch / control columns, obsm embeddings")
