"""Benchmark registry: the shipped benchmarks resolve to their runners, and run() is the runner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfmkit.evaluation.benchmark_registry import BENCHMARKS, Benchmark, register_benchmark


@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_registered_benchmark_resolves(name):
    b = BENCHMARKS.get(name)
    fn = b.function()
    assert b.name == name and callable(fn) and fn.__doc__ and b.description and b.inputs
    assert fn.__name__ == f"benchmark_{name}"


def test_shipped_benchmarks():
    assert {"celltype", "genes", "pretraining", "perturbation", "knn"} <= set(BENCHMARKS.names())
    assert BENCHMARKS.get("pretraining").needs_model and not BENCHMARKS.get("celltype").needs_model


def test_run_is_the_runner_and_new_benchmarks_register():
    from tfmkit.evaluation.knn import benchmark_knn

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 30)
    X = rng.normal(size=(60, 3)) + (y == "b")[:, None] * 3
    pd.testing.assert_frame_equal(BENCHMARKS.get("knn").run({"x": X}, y), benchmark_knn({"x": X}, y))
    b = register_benchmark("test_only_knn", description="kNN again (test entry)", inputs="arrays",
                           runner="tfmkit.evaluation.knn:benchmark_knn")
    try:
        assert isinstance(b, Benchmark) and BENCHMARKS.get("test_only_knn").run({"x": X}, y).shape == (2, 7)
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark("test_only_knn", description="d", inputs="i", runner="m:f")
    finally:
        BENCHMARKS._entries.pop("test_only_knn")
