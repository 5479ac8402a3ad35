"""``tfmkit doctor``: environment check (:func:`tfmkit.doctor.run_doctor`) and, with ``--input``,
a preflight of a user file (:func:`tfmkit.preflight.inspect_input`)."""

from __future__ import annotations

import typer


def doctor(
    input: str = typer.Option(None, "--input", "-i", help="Preflight this .h5ad / 10x .h5: where the raw counts are, what X holds, gene namespace, coverage, memory; prints the exact flag to use."),
    model: str = typer.Option(None, "--model", "-m", help="With --input: also check the file's genes against this model's vocabulary."),
) -> None:
    """Check the environment (versions, device, shipped files), or preflight an input file.

    Exit status 1 when something is broken or the input cannot be used as is.
    """
    if input is None:
        if model is not None:
            from tfmkit.errors import TfmkitError

            raise TfmkitError("--model only applies with --input: tfmkit doctor --input X.h5ad --model DIR")
        from tfmkit.doctor import run_doctor

        raise typer.Exit(code=0 if run_doctor() else 1)
    from pathlib import Path

    from tfmkit.preflight import format_report, inspect_input

    report = inspect_input(input, model_vocab=model, source=Path(input).name)
    typer.echo(format_report(report))
    raise typer.Exit(code=0 if report.ok else 1)
