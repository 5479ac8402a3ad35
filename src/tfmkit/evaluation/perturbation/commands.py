"""``tfmkit benchmark perturbation`` (typer command; registered by :func:`register` on the
``benchmark`` sub-app of :mod:`tfmkit.cli`).

Reads a Perturb-seq ``.h5ad`` (raw counts in X or ``--layer``, labels in obs, embeddings in
obsm) or, with ``--simulate``, simulates one on real control cells; writes ``OUT/results.csv``
(long format) and ``OUT/results.md`` (Table-2 view).
"""

from __future__ import annotations

import typer

DEFAULT_BASELINES = "raw,lognorm,hvg5000,hvg1024,pca50,random_label_shuffle"
# obs conventions of public Perturb-seq h5ad files (explicit options override them)
LAYOUTS = {
    "replogle2022": {"perturbation_key": "gene", "batch_key": "gem_group", "control_value": "non-targeting"},
    "nadig2024": {"perturbation_key": "gene", "batch_key": "gem_group", "control_value": "non-targeting"},
    "tfmkit": {"perturbation_key": "perturbation", "batch_key": "batch", "control_value": "non-targeting"},
}


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


def perturbation(
    input: str = typer.Option(None, "--input", "-i", help="Perturb-seq .h5ad (raw counts in X or --layer; perturbation/batch labels in obs; embeddings in obsm). Not needed with --simulate."),
    obsm: list[str] = typer.Option(None, "--obsm", help="obsm key(s) of the embeddings to benchmark; repeat the option or list several after one --obsm."),
    layout: str = typer.Option("tfmkit", "--layout", help="Column preset: tfmkit (perturbation/batch), replogle2022 or nadig2024 (gene/gem_group, control 'non-targeting'). Explicit key options override it."),
    perturbation_key: str = typer.Option(None, "--perturbation-key", help="obs column with the perturbation label (perturbed gene symbol); default from --layout."),
    batch_key: str = typer.Option(None, "--batch-key", help="obs column with the batch (e.g. gem_group); default from --layout."),
    control_key: str = typer.Option(None, "--control-key", help="obs column that flags controls (default: the perturbation column). Boolean columns are compared as booleans."),
    control_value: str = typer.Option(None, "--control-value", help="Value marking controls in --control-key: a string such as 'non-targeting', or true/false for a boolean column (default: true for boolean columns, else from --layout)."),
    gene_key: str = typer.Option(None, "--gene-key", help="obs column with the perturbed gene symbol for relationship recall, if the perturbation labels are not symbols."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts for baselines and the invertibility target (default X)."),
    baselines: str = typer.Option(DEFAULT_BASELINES, "--baselines", help="Comma-separated baselines: raw, lognorm, hvg<N>, pca<N>, random_label_shuffle."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Benchmark only the --obsm embeddings."),
    n_seeds: int = typer.Option(5, "--n-seeds", help="Seeds averaged per metric (TxFM: 5)."),
    postprocessing: str = typer.Option("center,standardize,tvn", "--postprocessing", help="Comma-separated post-processings tried per task (best kept): center, standardize, tvn."),
    tasks: str = typer.Option("ilisi,lin,knn,p.cst,bmdb,inv", "--tasks", help="Comma-separated tasks: ilisi, lin, knn, p.cst, bmdb, inv."),
    databases: str = typer.Option("corum,hallmark,reactome", "--databases", help="Comma-separated gene-relationship databases for bmdb: corum (non-commercial licence), hallmark, reactome, canonical_pathways."),
    n_null: int = typer.Option(10_000, "--n-null", help="Random cells in the perturbation-consistency null (TxFM: 10,000)."),
    simulate: bool = typer.Option(False, "--simulate", help="Simulate a Perturb-seq screen on the bundled real BALF counts (or on --input's cells as controls) and benchmark it end to end. Results are labelled SIMULATED."),
    sim_perturbations: int = typer.Option(50, "--sim-perturbations", help="Simulated perturbed genes (--simulate)."),
    sim_cells: int = typer.Option(50, "--sim-cells", help="Simulated cells per perturbation (--simulate)."),
    sim_batches: int = typer.Option(4, "--sim-batches", help="Simulated batches (--simulate)."),
    sim_effect_size: float = typer.Option(1.0, "--sim-effect-size", help="Scale of the simulated complex/pathway log-fold changes (--simulate)."),
    save_simulated: bool = typer.Option(False, "--save-simulated", help="Also write the simulated data to OUT/simulated_perturbseq.h5ad."),
    seed: int = typer.Option(0, "--seed", help="Simulator seed (--simulate)."),
    out: str = typer.Option("tfmkit-benchmark-perturbation", "--out", "-o", help="Output folder for results.csv and results.md."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files in --out."),
    extra_obsm: list[str] = typer.Argument(None, help="More obsm keys (so `--obsm A B C` works)."),
) -> None:
    """Perturbation-representation benchmark (TxFM Table 2; Bendidi et al. 2024) vs baselines."""
    from pathlib import Path

    from tfmkit.errors import TfmkitError
    from tfmkit.evaluation.perturbation.report import write_perturbation_results
    from tfmkit.evaluation.perturbation.runner import benchmark_perturbation

    if layout not in LAYOUTS:
        raise TfmkitError(f"unknown --layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    keys = list(obsm or []) + list(extra_obsm or [])
    base = [] if no_baselines else _split(baselines)
    preset = LAYOUTS["tfmkit" if simulate else layout]
    if simulate:
        from tfmkit.datasets.simulate import simulate_perturbseq

        if keys:
            raise TfmkitError("--simulate produces no model embeddings; drop --obsm (baselines only)")

        src = None
        if input:
            from tfmkit.data.io import read_anndata

            src = read_anndata(input, layer=layer)
        typer.echo("simulating a Perturb-seq screen (SIMULATED data on real control counts) ...")
        adata = simulate_perturbseq(src, n_perturbations=sim_perturbations, cells_per_perturbation=sim_cells,
                                    n_batches=sim_batches, effect_size=sim_effect_size, seed=seed)
        pk, bk, ck, cv, lay = "perturbation", "batch", "is_control", "true", None
        if save_simulated:
            path = Path(out) / "simulated_perturbseq.h5ad"
            if path.exists() and not overwrite:
                raise TfmkitError(f"{path} already exists; pass --overwrite or choose another --out")
            path.parent.mkdir(parents=True, exist_ok=True)
            adata.write_h5ad(path)
            typer.echo(f"wrote {path}")
    else:
        if not input:
            raise TfmkitError("pass --input FILE.h5ad, or --simulate for a simulated screen")
        from tfmkit.data.io import read_anndata

        adata = read_anndata(input)
        pk = perturbation_key or preset["perturbation_key"]
        bk = batch_key or preset["batch_key"]
        ck = control_key or pk
        cv = control_value if control_value is not None else (
            None if control_key else preset["control_value"])
        lay = layer
    typer.echo(f"{adata.n_obs} cells; embeddings: {', '.join(keys) or 'none'}; baselines: "
               f"{', '.join(base) or 'none'}; {n_seeds} seed(s)")
    df = benchmark_perturbation(
        adata, obsm_keys=keys, perturbation_key=pk, batch_key=bk, control_key=ck,
        control_value=cv, baselines=base, layer=lay, n_seeds=n_seeds,
        postprocessings=_split(postprocessing), tasks=_split(tasks), databases=_split(databases),
        gene_key=gene_key, n_null=n_null, progress=True)
    notes = (f"Input: {'SIMULATED (tfmkit.datasets.simulate_perturbseq, seed ' + str(seed) + ')' if simulate else '`' + str(input) + '`'}; "
             f"perturbation `{pk}`, batch `{bk}`, controls `{ck}` == `{cv}`; {n_seeds} seed(s); "
             f"post-processings {postprocessing}.")
    res = write_perturbation_results(df, out, notes=notes, overwrite=overwrite,
                                     simulated=bool(adata.uns.get("simulated", False)))
    typer.echo(res["table"])
    typer.echo(f"wrote {res['csv']} ({len(df)} rows, long format) and {res['md']}")


def register(benchmark_app: typer.Typer) -> None:
    """Add the ``perturbation`` command to ``tfmkit benchmark``."""
    benchmark_app.command("perturbation")(perturbation)
