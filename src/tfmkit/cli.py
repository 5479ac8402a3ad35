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
from tfmkit import ablation as _abl; _abl.register(app)  # noqa: E402,E702
from tfmkit.evaluation import commands as _bench_cmds; _bench_cmds.register(benchmark_app)  # noqa: E402,E702
from tfmkit.evaluation.perturbation import commands as _pert_cmds; _pert_cmds.register(benchmark_app)  # noqa: E402,E702
# END REGISTRATIONS


# ---- core commands ------------------------------------------------------------------------------
@app.command()
def pretrain(
    config: str = typer.Option("txfm_tiny", "--config", "-c", help="Run YAML path or shipped preset name (txfm_tiny, txfm_s, txfm_b, txfm_l)."),
    data: list[str] = typer.Option(None, "--data", "-d", help="Raw-count .h5ad / 10x .h5 file; repeat for several datasets (gene panels). Default: the bundled BALF corpus."),
    out: str = typer.Option("runs/tfmkit", "--out", "-o", help="Run folder: config.yaml, train_log.csv and the model/ checkpoint."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    layer: str = typer.Option(None, "--layer", help="AnnData layer holding raw counts (default X)."),
    overrides: list[str] = typer.Argument(None, help="Config overrides section.key=value, e.g. train.steps=1000 model.depth=4."),
) -> None:
    """Pretrain a TxFM masked autoencoder (fp32 on CPU, bf16 autocast on GPU)."""
    from tfmkit.config import load_config
    from tfmkit.training import pretrain as run_pretrain

    ov = list(overrides or [])
    if data:
        ov.append(f"data.paths={list(data)}")
    if layer:
        ov.append(f"data.layer={layer}")
    cfg = load_config(config, ov)
    model_dir = run_pretrain(cfg, out, resume=resume)
    typer.echo(f"model written to {model_dir}  (log: {out}/train_log.csv)")


@app.command()
def embed(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain --out` or `tfmkit demo --out`)."),
    input: str = typer.Option(..., "--input", "-i", help="Input .h5ad / 10x .h5 with raw counts."),
    output: str = typer.Option(..., "--output", "-o", help="Output .h5ad (input + obsm[KEY] + uns['tfmkit'])."),
    key: str = typer.Option("X_tfmkit", "--key", help="obsm key to write the cell embedding to."),
    layer: str = typer.Option(None, "--layer", help="Layer holding raw counts (default X)."),
    n_revealed: int = typer.Option(None, "--n-revealed", help="Genes revealed per cell (default: the model's training K)."),
    n_views: int = typer.Option(1, "--n-views", help="Average the CLS embedding over this many random maskings."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
) -> None:
    """Embed cells with a trained model: writes obsm[KEY] and provenance in uns['tfmkit']."""
    from pathlib import Path

    from tfmkit.data.io import read_anndata
    from tfmkit.errors import TfmkitError
    from tfmkit.inference import embed as run_embed, load_model

    if Path(output).exists() and not overwrite:
        raise TfmkitError(f"{output} exists; pass --overwrite or choose another --output")
    m = load_model(model, device=device)
    adata = read_anndata(input, layer=layer)
    run_embed(adata, m, key=key, n_revealed=n_revealed, n_views=n_views, batch_size=batch_size,
              progress=True)
    adata.write_h5ad(output)
    typer.echo(f"wrote {output}: obsm[{key!r}] {adata.obsm[key].shape}")


@app.command()
def demo(
    out: str = typer.Option("tfmkit-demo", "--out", "-o", help="Report folder (report.md, results.csv, PNG plots, model/)."),
    quick: bool = typer.Option(False, "--quick", help="Small budget: finishes in under 5 minutes on 2 CPU cores."),
    steps: int = typer.Option(None, "--steps", help="Override the number of pretraining steps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo folder."),
) -> None:
    """Pretrain TxFM-tiny on the bundled BALF data, embed held-out labelled data, benchmark vs baselines."""
    from tfmkit.demo import run_demo

    report = run_demo(out, quick=quick, steps=steps, overwrite=overwrite)
    typer.echo(f"report: {report}")


@app.command()
def doctor() -> None:
    """Check the environment: versions, device, bundled data files."""
    from tfmkit.doctor import run_doctor

    ok = run_doctor()
    raise typer.Exit(code=0 if ok else 1)


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
