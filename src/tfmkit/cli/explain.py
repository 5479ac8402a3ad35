"""``tfmkit explain``: integrated-gradients top genes per class (:mod:`tfmkit.finetune.explain`).

Writes ``RES/top_genes.csv`` (``class, rank, gene, attribution``), ``RES/attributions.csv``
(genes x classes, mean integrated gradients) and ``RES/top_genes.png``. ``RES`` must not hold
these files already (unless ``--overwrite``); they are written only after every attribution is
computed, through temporary files, so a failed run leaves none of them.
"""

from __future__ import annotations

import typer

OUTPUTS = ("top_genes.csv", "attributions.csv", "top_genes.png")


def explain(
    model: str = typer.Option(..., "--model", "-m", help="A `tfmkit finetune celltype` model (class logits are explained), or any model with --label-key (its cell embedding)."),
    input: str = typer.Option(..., "--input", "-i", help="Cells to explain: .h5ad / 10x .h5 with raw counts."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder (created if absent)."),
    label_key: str = typer.Option(None, "--label-key", help="obs column of the classes (default: the classifier's label column; without it, predicted classes)."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated classes to explain (default all)."),
    n_top: int = typer.Option(20, "--n-top", help="Top genes per class in top_genes.csv."),
    cells_per_class: int = typer.Option(64, "--cells-per-class", help="Cells explained per class (random subset)."),
    n_views: int = typer.Option(2, "--n-views", help="Random reveals averaged per cell."),
    n_steps: int = typer.Option(32, "--n-steps", help="Integration steps of integrated gradients."),
    n_revealed: int = typer.Option(None, "--n-revealed", help="Genes revealed per cell (default: the model's K)."),
    layer: str = typer.Option(None, "--layer", help="Layer holding raw counts (default X; 'raw' = adata.raw)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cell subset and reveals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs in --out."),
) -> None:
    """Integrated-gradients attributions of genes to each class; top genes and a plot."""
    import os
    from pathlib import Path

    from tfmkit.errors import TfmkitError

    res = Path(out)
    if res.exists() and not res.is_dir():
        raise TfmkitError(f"--out {res} is a file; give a folder")
    if not res.absolute().parent.is_dir():
        raise TfmkitError(f"the directory {res.absolute().parent} of --out does not exist; create it first")
    clash = [f for f in OUTPUTS if (res / f).exists()]
    if clash and not overwrite:
        raise TfmkitError(f"{res / clash[0]} exists; pass --overwrite or choose another --out")
    from tfmkit.data.io import read_anndata
    from tfmkit.finetune.explain import explain as run_explain, plot_top_genes, top_genes

    result = run_explain(read_anndata(input), model, label_key=label_key, n_cells_per_class=cells_per_class,
                         n_views=n_views, n_steps=n_steps, n_revealed=n_revealed, layer=layer, seed=seed,
                         classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)
    top = top_genes(result["attributions"], n_top)
    res.mkdir(exist_ok=True)
    tmp = {f: res / f".tmp-{f}" for f in OUTPUTS}  # same suffix: matplotlib reads the format from it
    try:
        top.to_csv(tmp["top_genes.csv"], index=False)
        result["attributions"].to_csv(tmp["attributions.csv"])
        plot_top_genes(top, tmp["top_genes.png"])
        for f, t in tmp.items():
            os.replace(t, res / f)
    finally:
        for t in tmp.values():
            t.unlink(missing_ok=True)
    typer.echo(f"score: {result['score']}; integrated-gradients completeness error {result['delta']:.2e} "
               f"(mean |F(x) - F(0)| {result['mean_abs_score_change']:.3g})")
    for c, g in top.groupby("class", sort=False):
        typer.echo(f"{c} ({result['n_cells'][c]} cells): {', '.join(g['gene'].head(8))}")
    typer.echo(f"wrote {', '.join(str(res / f) for f in OUTPUTS)}")
