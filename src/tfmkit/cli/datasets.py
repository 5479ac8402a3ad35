"""``tfmkit datasets simulate-perturbseq``: write a SIMULATED Perturb-seq screen.

CRISPRi knock-downs simulated on real bundled BALF counts (:func:`tfmkit.datasets.simulate_perturbseq`);
with ``--contexts N`` the screen spans ``N`` cell contexts built from different real cell
populations, with shared and context-specific effects (for leave-one-context-out perturbation
prediction). The file records ``uns['simulated'] = True`` and a description; the output path is
checked before any work and written atomically.
"""

from __future__ import annotations

import typer


def simulate_perturbseq(
    out: str = typer.Option(..., "--out", "-o", help="Output .h5ad (SIMULATED data)."),
    contexts: int = typer.Option(None, "--contexts", help="Number of cell contexts (BALF macrophages, T cells, epithelial cells, neutrophils; at most 4). Default: one macrophage context."),
    perturbations: int = typer.Option(50, "--perturbations", help="Perturbed genes."),
    cells: int = typer.Option(50, "--cells", help="Cells per perturbation (per context)."),
    batches: int = typer.Option(4, "--batches", help="Batches (per context)."),
    effect_size: float = typer.Option(1.0, "--effect-size", help="Scale of the complex/pathway log-fold changes."),
    context_specificity: float = typer.Option(0.3, "--context-specificity", help="Share of each effect specific to a context (0 = all shared)."),
    min_gene_frac: float = typer.Option(0.01, "--min-gene-frac", help="Keep genes detected in at least this fraction of the base cells."),
    seed: int = typer.Option(0, "--seed", help="Simulator seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Simulate a Perturb-seq screen on real counts (SIMULATED; obs perturbation, guide, batch, is_control and context)."""
    from tfmkit.cli.outputs import check_output_file, write_h5ad_atomic
    from tfmkit.datasets.simulate import simulate_perturbseq as simulate

    path = check_output_file(out, overwrite=overwrite, option="--out")
    adata = simulate(n_perturbations=perturbations, cells_per_perturbation=cells, n_batches=batches,
                     effect_size=effect_size, contexts=contexts, context_specificity=context_specificity,
                     min_gene_frac=min_gene_frac, seed=seed)
    write_h5ad_atomic(adata, path)
    ctx = (f", contexts {', '.join(adata.uns['simulation']['contexts'])}" if contexts else "")
    typer.echo(f"wrote {path}: SIMULATED Perturb-seq, {adata.n_obs} cells x {adata.n_vars} genes, "
               f"{perturbations} perturbations{ctx} (seed {seed})")
