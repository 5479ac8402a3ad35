"""``tfmkit demo``: the end-to-end demo (logic in :func:`tfmkit.demo.run_demo`)."""

from __future__ import annotations

import typer


def demo(
    out: str = typer.Option("tfmkit-demo", "--out", "-o", help="Report folder (report.md, results.csv, PNG plots, model/)."),
    quick: bool = typer.Option(False, "--quick", help="Small budget: 1 training seed, 300 steps; SSL-adapted and from-scratch rows on pbmc68k only; no gene benchmarks (about 5 minutes on 2 idle CPU cores; the full demo, 3 seeds x 2,000 steps, takes several times longer)."),
    steps: int = typer.Option(None, "--steps", help="Override the number of pretraining steps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo report in --out."),
) -> None:
    """Pretrain TxFM-tiny on the bundled BALF data, embed held-out labelled data, benchmark vs baselines."""
    from tfmkit.demo import run_demo

    report = run_demo(out, quick=quick, steps=steps, overwrite=overwrite)
    typer.echo(f"report: {report}")
