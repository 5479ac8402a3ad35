"""``tfmkit embed``: add a trained model's cell embedding to an ``.h5ad``.

The output is the input plus ``obsm[KEY]`` and ``uns['tfmkit']`` — nothing else changes: the
input is read as is and ``--layer`` only tells :func:`tfmkit.embed` where the raw counts are
(issue 11 item 4). The output path is checked before the model is loaded and written atomically.
"""

from __future__ import annotations

import typer

from tfmkit.cli.outputs import check_output_file, write_h5ad_atomic


def embed(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain --out` or `tfmkit demo --out`)."),
    input: str = typer.Option(..., "--input", "-i", help="Input .h5ad / 10x .h5 with raw counts (in X, or in --layer)."),
    output: str = typer.Option(..., "--output", "-o", help="Output .h5ad: the input + obsm[KEY] + uns['tfmkit'], nothing else changed."),
    key: str = typer.Option("X_tfmkit", "--key", help="obsm key to write the cell embedding to."),
    layer: str = typer.Option(None, "--layer", help="Layer holding raw counts (default X; 'raw' = adata.raw). X and the layers are kept as they are."),
    n_revealed: int = typer.Option(None, "--n-revealed", help="Genes revealed per cell (default: the model's training K)."),
    n_views: int = typer.Option(1, "--n-views", help="Average the embedding over this many random reveals."),
    pooling: str = typer.Option("cls", "--pooling", help="Cell embedding: cls, mean (of token states) or cls+mean."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
    max_in_memory_gb: float = typer.Option(4.0, "--max-in-memory-gb", help="Inputs whose counts exceed this many GB in memory are streamed in row blocks (.h5ad only), with bounded memory."),
    allow_low_coverage: bool = typer.Option(False, "--allow-low-coverage", help="Embed even when few of the model's genes are found in the input (e.g. another species or gene namespace)."),
) -> None:
    """Embed cells with a trained model: writes obsm[KEY] and provenance in uns['tfmkit']."""
    from pathlib import Path

    import tfmkit
    from tfmkit.data.io import read_input

    out = check_output_file(output, overwrite=overwrite)
    m = tfmkit.load_model(model, device=device)
    if Path(input).suffix.lower() == ".h5ad":
        from tfmkit.data.sources import estimated_bytes

        if estimated_bytes([input], layer) > max_in_memory_gb * 2**30:
            from tfmkit.streaming import embed_h5ad

            res = embed_h5ad(input, m, out, key=key, layer=layer, n_revealed=n_revealed,
                             n_views=n_views, pooling=pooling, batch_size=batch_size,
                             allow_low_coverage=allow_low_coverage, overwrite=overwrite,
                             progress=True)
            typer.echo(f"wrote {out}: obsm[{key!r}] ({res['n_cells']}, {res['dim']}) (streamed)")
            return
    adata = read_input(input, layer=layer)  # as is: --layer goes to tfmkit.embed, X/layers/var stay
    # the gene-mapping line ("mapped N of M input genes ...") is printed by the data layer
    tfmkit.embed(adata, m, key=key, layer=layer, n_revealed=n_revealed, n_views=n_views,
                 pooling=pooling, batch_size=batch_size, progress=True,
                 allow_low_coverage=allow_low_coverage, source=Path(input).name)
    write_h5ad_atomic(adata, out)
    typer.echo(f"wrote {out}: obsm[{key!r}] {adata.obsm[key].shape}")
