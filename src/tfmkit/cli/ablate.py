"""``tfmkit ablate``: train one model per grid cell and seed, then a Table-5-style comparison.

The work is done by :mod:`tfmkit.ablation` (``load_grid``, ``run_ablation``); this module only
parses the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tfmkit.errors import TfmkitError


def _split(value: str | None) -> list[str] | None:
    return [x.strip() for x in (value or "").split(",") if x.strip()] or None


def ablate(
    grid: str = typer.Option(..., "--grid", "-g", help="Grid YAML path or shipped grid name (txfm_table5, encodings, smoke)."),
    out: str = typer.Option("tfmkit-ablation", "--out", "-o", help="Output folder: runs/<cell>/seed<s>/ (models, reused on re-run), results.csv, per_seed.csv, results.md."),
    groups: str = typer.Option(None, "--groups", help="Comma-separated groups to run (default: all)."),
    cells: str = typer.Option(None, "--cells", help="Comma-separated cell names to run (default: all); the default cell always runs."),
    max_cells: int = typer.Option(None, "--max-cells", help="Run at most this many non-default cells (grid order); the default always runs."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds, replacing the grid's seeds."),
    steps: int = typer.Option(None, "--steps", help="Training steps of every cell (replaces the grid budget)."),
    bh_family: str = typer.Option("metric", "--bh-family", help="Benjamini–Hochberg family: 'metric' (per task/metric, as TxFM §C) or 'all' comparisons."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out (trained models are always reused, never deleted)."),
    overrides: list[str] = typer.Argument(None, help="Extra config overrides for every cell, e.g. train.batch_size=16."),
) -> None:
    """Train one model per grid cell and seed, evaluate, and write a Table-5-style table with significance vs the default."""
    from tfmkit.ablation import load_grid, run_ablation

    g = load_grid(grid)
    if groups or cells or max_cells is not None:
        g = g.select(_split(groups), max_cells, _split(cells))
    if seeds:
        try:
            g.seeds = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise TfmkitError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    extra = list(overrides or []) + ([f"train.steps={steps}"] if steps else [])
    chosen = g.cells()
    typer.echo(f"{len(chosen)} cells x {len(g.seeds)} seeds = {len(chosen) * len(g.seeds)} models "
               f"({', '.join(c.name for c in chosen)}) -> {out}")
    res = run_ablation(g, out, extra_overrides=extra, overwrite=overwrite, bh_family=bh_family)
    typer.echo(res["table"])
    typer.echo(f"wrote {res['csv']}, {Path(out) / 'per_seed.csv'} and {res['md']}")
