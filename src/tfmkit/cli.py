"""The ``tfmkit`` command line: one typed function per command (typer).

Errors of kind :class:`tfmkit.errors.TfmkitError` (bad input, bad config) are printed on one
line and exit with status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    help="tfmkit: build, pretrain, fine-tune and benchmark transcriptomic foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
benchmark_app = typer.Typer(
    help="Benchmark embeddings against baselines (writes OUT/results.csv and OUT/results.md).",
    no_args_is_help=True,
)
app.add_typer(benchmark_app, name="benchmark")

# ---- command registrations (each command lives in its own module) ---------------------------
# BEGIN REGISTRATIONS (helpers: add one line per command here, keep the block sorted)
# END REGISTRATIONS


def main() -> None:
    """Console-script entry point with one-line errors for user mistakes."""
    from tfmkit.errors import TfmkitError

    try:
        app()
    except TfmkitError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
