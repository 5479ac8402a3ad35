"""Bundled real datasets (raw counts) and their loaders; see ``DATA_NOTES.md`` for provenance."""

from tfmkit.datasets.bundled import (
    DATASETS,
    load_balf,
    load_corpus,
    load_pbmc68k,
    load_wu2020,
)

__all__ = ["DATASETS", "load_balf", "load_corpus", "load_pbmc68k", "load_wu2020"]
from tfmkit.datasets.simulate import simulate_perturbseq  # noqa: E402  (SIMULATED Perturb-seq)

__all__ += ["simulate_perturbseq"]
