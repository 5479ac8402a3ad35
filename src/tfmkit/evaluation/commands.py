"""``tfmkit benchmark celltype | genes | pretraining`` (typer commands; registered by
:func:`register` on the ``benchmark`` sub-app of :mod:`tfmkit.cli`).

Each command writes ``OUT/results.csv`` (long format, SPEC §1) and ``OUT/results.md`` (table
with an average-rank column) and prints the table.
"""

from __future__ import annotations

import typer

DEFAULT_BASELINES = "raw,lognorm,hvg5000,hvg2000,hvg1024,pca50,pca128,random_label_shuffle"


def _write_and_print(df, out: str, title: str, overwrite: bool, notes: str = "") -> None:
    from tfmkit.evaluation.report import write_results

    res = write_results(df, out, title, overwrite=overwrite, notes=notes)
    typer.echo(res["table"])
    typer.echo(f"wrote {res['csv']} ({len(df)} rows, long format) and {res['md']}")


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


def celltype(
    input: str = typer.Option(..., "--input", "-i", help="Evaluation .h5ad (raw counts in X or --layer, labels in obs, embeddings in obsm)."),
    label_key: str = typer.Option(..., "--label-key", help="obs column with cell-type labels."),
    obsm: list[str] = typer.Option(None, "--obsm", help="obsm key(s) of the embeddings to benchmark; repeat the option or give several after one --obsm."),
    batch_key: str = typer.Option(None, "--batch-key", help="obs column with batches (enables batch-integration and isolated-label metrics and the batch-aware probe split)."),
    out: str = typer.Option("tfmkit-benchmark-celltype", "--out", "-o", help="Output folder for results.csv and results.md."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts for the baselines (default X; 'raw' = adata.raw)."),
    baselines: str = typer.Option(DEFAULT_BASELINES, "--baselines", help="Comma-separated baselines: raw, lognorm, hvg<N>, pca<N>, random_label_shuffle."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Benchmark only the given embeddings."),
    n_cells: int = typer.Option(10_000, "--n-cells", help="Cells per random subsample (TxFM: 10,000)."),
    n_seeds: int = typer.Option(10, "--n-seeds", help="Subsamples / clustering seeds (mean ± std over them)."),
    probes: str = typer.Option("linear,mlp,knn", "--probes", help="Comma-separated probes: linear, mlp, knn; empty string to skip."),
    n_probe_seeds: int = typer.Option(1, "--n-probe-seeds", help="Seeds (splits) for which the probes run."),
    fast: bool = typer.Option(False, "--fast", help="Quick look: 3 seeds, linear + kNN probes only."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
    extra_obsm: list[str] = typer.Argument(None, help="More obsm keys (so `--obsm A B C` works)."),
) -> None:
    """Cell-type clustering, batch-integration and probe metrics vs baselines (TxFM Table 4)."""
    from tfmkit.data.io import read_anndata
    from tfmkit.evaluation.runners import benchmark_celltype

    keys = list(obsm or []) + list(extra_obsm or [])
    base = [] if no_baselines else _split(baselines)
    probe_list = _split(probes)
    if fast:
        n_seeds = min(n_seeds, 3)
        probe_list = [p for p in probe_list if p != "mlp"]
    adata = read_anndata(input)
    typer.echo(f"{adata.n_obs} cells; embeddings: {', '.join(keys) or 'none'}; "
               f"baselines: {', '.join(base) or 'none'}; {n_seeds} seed(s)")
    df = benchmark_celltype(adata, label_key=label_key, batch_key=batch_key, obsm_keys=keys,
                            baselines=base, layer=layer, n_cells=n_cells, n_seeds=n_seeds,
                            probes=probe_list, n_probe_seeds=n_probe_seeds, progress=True)
    notes = (f"Input: `{input}`, labels `{label_key}`, batches `{batch_key}`; "
             f"{min(n_cells, adata.n_obs)} cells per subsample, {n_seeds} seed(s).")
    _write_and_print(df, out, "Cell-type benchmark", overwrite, notes)


def genes(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain` or `tfmkit demo`)."),
    out: str = typer.Option("tfmkit-benchmark-genes", "--out", "-o", help="Output folder for results.csv and results.md."),
    input: str = typer.Option(None, "--input", "-i", help="Optional raw-count .h5ad: adds the PCA-loadings baseline."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts in --input (default X)."),
    databases: str = typer.Option("corum,hallmark,canonical_pathways", "--databases", help="Comma-separated shipped databases: corum (non-commercial licence), hallmark, canonical_pathways, reactome."),
    n_null_draws: int = typer.Option(3, "--n-null-draws", help="Independent random-pair null draws (mean ± std)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
) -> None:
    """Gene-gene relationship recall of encoder tokens and decoder weights (TxFM §B.3)."""
    from tfmkit.data.io import read_anndata
    from tfmkit.evaluation.runners import benchmark_genes
    from tfmkit.inference import load_model

    m = load_model(model)
    adata = read_anndata(input, layer=layer) if input else None
    df = benchmark_genes(m, adata=adata, databases=_split(databases), n_null_draws=n_null_draws)
    _write_and_print(df, out, "Gene-gene relationship recall", overwrite,
                     "Recall = fraction of known pairs beyond the 5th/95th percentile of a "
                     "random-pair cosine null (chance 0.10).")


def pretraining(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain` or `tfmkit demo`)."),
    input: str = typer.Option(..., "--input", "-i", help="Held-out raw-count .h5ad / 10x .h5."),
    out: str = typer.Option("tfmkit-benchmark-pretraining", "--out", "-o", help="Output folder for results.csv and results.md."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts (default X)."),
    mask_rates: str = typer.Option("0.5,0.9", "--mask-rates", help="Comma-separated masking rates (fraction of observable genes hidden)."),
    n_seeds: int = typer.Option(1, "--n-seeds", help="Random maskings per rate (mean ± std)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per forward pass."),
    library_key: str = typer.Option(None, "--library-key", help="obs column of full-transcriptome total counts, for inputs that keep only a gene subset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
) -> None:
    """Held-out Poisson loss, full-transcriptome Spearman and binary correctness (GPL §4.5)."""
    from tfmkit.data.io import read_anndata
    from tfmkit.errors import TfmkitError
    from tfmkit.evaluation.runners import benchmark_pretraining
    from tfmkit.inference import load_model

    try:
        rates = [float(r) for r in _split(mask_rates)]
    except ValueError:
        raise TfmkitError(f"--mask-rates must be numbers like 0.5,0.9, got {mask_rates!r}") from None
    m = load_model(model)
    adata = read_anndata(input, layer=layer)
    df = benchmark_pretraining(m, adata, mask_rates=rates, n_seeds=n_seeds, batch_size=batch_size,
                               library_key=library_key)
    _write_and_print(df, out, "Pretraining quality", overwrite,
                     "Spearman/binary correctness use the pre-activation logits; *_masked = only "
                     "genes hidden from the encoder; gene_mean = per-gene mean profile baseline.")


def register(benchmark_app: typer.Typer) -> None:
    """Add the ``celltype``, ``genes`` and ``pretraining`` commands to ``tfmkit benchmark``."""
    benchmark_app.command("celltype")(celltype)
    benchmark_app.command("genes")(genes)
    benchmark_app.command("pretraining")(pretraining)
