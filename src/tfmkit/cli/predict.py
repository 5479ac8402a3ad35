"""``tfmkit predict``: cell-type predictions of a ``tfmkit finetune celltype`` model.

The output is the input plus ``obs['tfmkit_pred']``, ``obs['tfmkit_pred_score']``,
``obsm['tfmkit_pred_proba']`` (columns = ``uns['tfmkit_pred_classes']``) and provenance in
``uns['tfmkit']['tfmkit_pred']`` (:func:`tfmkit.finetune.predict`). The output path is checked
before the model is loaded and written atomically.
"""

from __future__ import annotations

import typer

from tfmkit.cli.outputs import check_output_file, write_h5ad_atomic


def predict(
    model: str = typer.Option(..., "--model", "-m", help="Fine-tuned model directory (OUT/model of `tfmkit finetune celltype`)."),
    input: str = typer.Option(..., "--input", "-i", help="Cells to classify: .h5ad / 10x .h5 with raw counts."),
    output: str = typer.Option(..., "--output", "-o", help="Output .h5ad: the input + the prediction keys."),
    n_views: int = typer.Option(1, "--n-views", help="Average class probabilities over this many random reveals."),
    layer: str = typer.Option(None, "--layer", help="Layer holding raw counts (default X; 'raw' = adata.raw)."),
    library_key: str = typer.Option(None, "--library-key", help="obs column of per-cell total counts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
) -> None:
    """Predict cell types with a fine-tuned classifier."""
    from tfmkit.data.io import read_anndata
    from tfmkit.finetune import predict as run_predict
    from tfmkit.finetune.predict import load_classifier

    out = check_output_file(output, overwrite=overwrite)
    load_classifier(model)  # a model that is not a classifier fails before reading the input
    adata = read_anndata(input)
    prov = run_predict(adata, model, n_views=n_views, layer=layer, library_key=library_key)
    write_h5ad_atomic(adata, out)
    counts = adata.obs["tfmkit_pred"].value_counts()
    typer.echo(f"wrote {out}: {adata.n_obs} cells, " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if prov.get("accuracy") is not None:
        typer.echo(f"accuracy vs obs[{prov['label_key']!r}]: {prov['accuracy']:.3f} on {prov['n_cells_scored']} cells"
                   + (f" ({len(prov['unseen_labels'])} label(s) absent from training left out)" if prov["unseen_labels"] else ""))
