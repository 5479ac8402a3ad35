"""``tfmkit benchmark celltype | genes | pretraining | perturbation``.

Each command checks ``--out`` before reading any data (existing results are refused unless
``--overwrite``), runs a runner of :mod:`tfmkit.evaluation`, writes ``OUT/results.csv`` (long
format, SPEC §1) and ``OUT/results.md``, and prints the table. A failed benchmark leaves no
directory it created.
"""

from __future__ import annotations

import typer

from tfmkit.cli.outputs import check_output_file, results_dir
from tfmkit.errors import TfmkitError

CELLTYPE_BASELINES = "raw,lognorm,hvg5000,hvg2000,hvg1024,pca50,pca128,random_label_shuffle"
PERTURBATION_BASELINES = "raw,lognorm,hvg5000,hvg1024,pca50,random_label_shuffle"
LABEL_ONLY_BASELINES = ("random_label_shuffle",)  # scored against labels: skipped without --label-key
FAST_MAX_CELLS = 2_000  # --fast: cells kept (stratified) unless --max-cells says otherwise
# obs conventions of public Perturb-seq h5ad files (explicit options override them)
LAYOUTS = {
    "replogle2022": {"perturbation_key": "gene", "batch_key": "gem_group", "control_value": "non-targeting"},
    "nadig2024": {"perturbation_key": "gene", "batch_key": "gem_group", "control_value": "non-targeting"},
    "tfmkit": {"perturbation_key": "perturbation", "batch_key": "batch", "control_value": "non-targeting"},
}


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


def _write_and_print(df, out: str, title: str, overwrite: bool, notes: str = "") -> None:
    from tfmkit.evaluation.report import write_results

    res = write_results(df, out, title, overwrite=overwrite, notes=notes)
    typer.echo(res["table"])
    typer.echo(f"wrote {res['csv']} ({len(df)} rows, long format) and {res['md']}")


def counts_source(adata, layer: str | None):
    """``(adata, layer)`` for the runners, which read counts from ``X`` or ``adata.layers``:
    ``--layer raw`` without a layer of that name becomes an AnnData of ``adata.raw`` (same cells,
    obs and obsm); an absent layer is a one-line error listing the available ones."""
    if layer is None or layer in adata.layers:
        return adata, layer
    if layer == "raw" and adata.raw is not None:
        raw = adata.raw.to_adata()
        raw.obs = adata.obs.copy()
        for k, v in adata.obsm.items():
            raw.obsm[k] = v
        raw.uns = adata.uns
        return raw, None
    avail = sorted(adata.layers.keys()) + (["raw"] if adata.raw is not None else [])
    raise TfmkitError(f"layer {layer!r} not found; available layers: {', '.join(avail) or 'none'} "
                      "(omit --layer to use X)")


def _made_by(adata, keys: list[str], model_dir) -> list[str]:
    """The obsm keys whose ``uns['tfmkit']`` provenance names ``model_dir`` (all keys when none
    records a model: the user said they came from it)."""
    from pathlib import Path

    prov = dict(adata.uns.get("tfmkit", {}))
    own = [k for k in keys if isinstance(prov.get(k), dict) and prov[k].get("model")
           and Path(str(prov[k]["model"])).resolve() == Path(model_dir).resolve()]
    recorded = [k for k in keys if isinstance(prov.get(k), dict) and prov[k].get("model")]
    return own if recorded else list(keys)


def celltype(
    input: str = typer.Option(..., "--input", "-i", help="Evaluation .h5ad (raw counts in X or --layer, labels in obs, embeddings in obsm)."),
    label_key: str = typer.Option(None, "--label-key", help="obs column with cell-type labels. Without it only batch-mixing metrics are computed (needs --batch-key)."),
    obsm: list[str] = typer.Option(None, "--obsm", help="obsm key(s) of the embeddings to benchmark; repeat the option or give several after one --obsm."),
    batch_key: str = typer.Option(None, "--batch-key", help="obs column with batches (enables batch-integration and isolated-label metrics and the batch-aware probe split)."),
    out: str = typer.Option("tfmkit-benchmark-celltype", "--out", "-o", help="Output folder for results.csv and results.md."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts for the baselines (default X; 'raw' = adata.raw)."),
    baselines: str = typer.Option(CELLTYPE_BASELINES, "--baselines", help="Comma-separated baselines: raw, lognorm, hvg<N>, pca<N>, random_label_shuffle."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Benchmark only the given embeddings."),
    n_cells: int = typer.Option(10_000, "--n-cells", help="Cells per random subsample (TxFM: 10,000)."),
    n_seeds: int = typer.Option(10, "--n-seeds", help="Subsamples / clustering seeds (mean ± std over them)."),
    probes: str = typer.Option("linear,mlp,knn", "--probes", help="Comma-separated probes: linear (L2-logistic), l1_linear (L1-logistic), mlp, knn; empty string to skip."),
    n_probe_seeds: int = typer.Option(1, "--n-probe-seeds", help="Seeds (splits) for which the probes run."),
    fast: bool = typer.Option(False, "--fast", help="Quick look: 3 seeds, linear + kNN probes only, at most 2,000 cells (unless --max-cells is given); 118 s and 1.5 GB on 5,000 cells x 20,000 genes on 2 cores (the defaults take over 10 min there: docs/benchmarks.md)."),
    max_cells: int = typer.Option(None, "--max-cells", help="First keep at most this many cells: a seeded subsample stratified by --label-key (every label keeps >= 10 cells). Bounds time and memory on large inputs. Default: every cell (each seed still draws --n-cells)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --max-cells subsample."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
    model: str = typer.Option(None, "--model", "-m", help="The model directory the embeddings came from: warns when evaluation cells were in its pretraining data, and adds the headline rows (model − best baseline) to its MODEL_CARD.md."),
    extra_obsm: list[str] = typer.Argument(None, help="More obsm keys (so `--obsm A B C` works)."),
) -> None:
    """Cell-type clustering, batch-integration and probe metrics vs baselines (TxFM Table 4)."""
    from tfmkit.evaluation.subsample import check_max_cells

    check_max_cells(max_cells)
    if not label_key and not batch_key:
        raise TfmkitError("give --label-key (cell-type metrics and probes) and/or --batch-key "
                          "(batch-mixing metrics; enough for unlabelled data)")
    keys = list(obsm or []) + list(extra_obsm or [])
    base = [] if no_baselines else _split(baselines)
    probe_list = _split(probes)
    if fast:
        n_seeds = min(n_seeds, 3)
        probe_list = [p for p in probe_list if p != "mlp"]
        max_cells = FAST_MAX_CELLS if max_cells is None else max_cells
    if not label_key:  # batch-only mode: nothing is scored against labels
        probe_list = []
        base = [b for b in base if b not in LABEL_ONLY_BASELINES]
    if model is not None:
        from tfmkit.checkpoint import resolve_model_dir

        model = resolve_model_dir(model)  # a bad --model fails before any work
    with results_dir(out, overwrite=overwrite):
        from pathlib import Path

        from tfmkit.data.io import read_anndata
        from tfmkit.evaluation.runners import benchmark_celltype

        adata, lay = counts_source(read_anndata(input), layer)
        if model is not None:
            from tfmkit.model_card import check_leakage

            check_leakage(model, adata, layer=lay, source=Path(input).name)
        typer.echo(f"{adata.n_obs} cells; embeddings: {', '.join(keys) or 'none'}; "
                   f"baselines: {', '.join(base) or 'none'}; {n_seeds} seed(s)"
                   + ("" if label_key else "; no --label-key: batch-mixing metrics only"))
        df = benchmark_celltype(adata, label_key=label_key or None, batch_key=batch_key,
                                obsm_keys=keys, baselines=base, layer=lay, n_cells=n_cells,
                                n_seeds=n_seeds, probes=probe_list, n_probe_seeds=n_probe_seeds,
                                max_cells=max_cells, seed=seed, progress=True)
        used = int(df["n_cells_used"].iloc[0])
        kept = (f"{used} of {adata.n_obs} cells (--max-cells {max_cells}, --seed {seed}, "
                f"stratified by `{label_key or batch_key}`)" if used < adata.n_obs else f"all {used} cells")
        notes = (f"Input: `{input}`, labels `{label_key}`, batches `{batch_key}`; {kept}; "
                 f"{min(n_cells, used)} cells per subsample, {n_seeds} seed(s).")
        _write_and_print(df, out, "Cell-type benchmark", overwrite, notes)
        if model is not None:
            from tfmkit.model_card import record_benchmark

            rows = record_benchmark(model, "celltype", df, embeddings=_made_by(adata, keys, model))
            typer.echo(f"added {len(rows)} headline row(s) to {model / 'MODEL_CARD.md'}")


def genes(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain` or `tfmkit demo`)."),
    out: str = typer.Option("tfmkit-benchmark-genes", "--out", "-o", help="Output folder for results.csv and results.md."),
    input: str = typer.Option(None, "--input", "-i", help="Optional raw-count .h5ad: adds the PCA-loadings baseline and the GRN co-expression baseline."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts in --input (default X)."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated: recall (gene-pair recall), grn (TF->target AUROC), lda (gene-annotation LDA probe). Default: all three, skipping (with a note) those the model's genes cannot support."),
    databases: str = typer.Option("corum,hallmark,canonical_pathways", "--databases", help="Comma-separated shipped databases for recall: corum (non-commercial licence), hallmark, canonical_pathways, reactome."),
    tf_targets: str = typer.Option("chea2022", "--tf-targets", help="TF->target table for grn: chea2022 (ChEA 2022 human, non-commercial licence)."),
    annotation: str = typer.Option("go_cc", "--annotation", help="Gene annotation for lda: go_cc (11 GO cellular compartments)."),
    n_null_draws: int = typer.Option(3, "--n-null-draws", help="Independent random-pair null draws for recall (mean ± std)."),
    max_cells: int = typer.Option(10_000, "--max-cells", help="Cells of --input used for the PCA-loadings and co-expression baselines (a seeded subsample; per-gene statistics, well estimated from 10,000 cells)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --max-cells subsample."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
) -> None:
    """Gene-level biology of gene tables: pair recall (TxFM §B.3), GRN AUROC and LDA probe (GPL §2.3)."""
    from tfmkit.evaluation.runners import GENE_TASKS
    from tfmkit.evaluation.subsample import check_max_cells

    check_max_cells(max_cells)
    explicit = tasks is not None
    task_list = _split(tasks) if explicit else list(GENE_TASKS)
    bad = [t for t in task_list if t not in GENE_TASKS]
    if bad or not task_list:
        raise TfmkitError(f"--tasks must list some of {', '.join(GENE_TASKS)}, got {tasks!r}")
    with results_dir(out, overwrite=overwrite):
        import tfmkit
        from tfmkit.data.io import read_anndata
        from tfmkit.evaluation.gene_benchmark import subsample_input
        from tfmkit.evaluation.runners import benchmark_genes, gene_representations

        m = tfmkit.load_model(model)
        adata = subsample_input(read_anndata(input, layer=layer), max_cells, seed) if input else None
        import pandas as pd

        reps = gene_representations(m, adata=adata)  # once for every task (PCA loadings included)
        frames = []
        for task in task_list:  # an explicit --tasks fails on any task; the default skips with a note
            try:
                frames.append(benchmark_genes(representations=reps, adata=adata,
                                              databases=_split(databases), max_cells=None,
                                              n_null_draws=n_null_draws, tasks=[task],
                                              tf_targets=tf_targets, annotation=annotation))
            except TfmkitError as err:
                if explicit:
                    raise
                typer.echo(f"skipped {task}: {err}", err=True)
        if not frames:
            raise TfmkitError("no gene benchmark could run on this model's genes (see the notes above)")
        df = pd.concat(frames, ignore_index=True)
        _write_and_print(df, out, "Gene-level biology", overwrite,
                         "gene_recall: fraction of known pairs beyond the 5th/95th percentile of a "
                         "random-pair cosine null (chance 0.10). grn: mean per-TF AUROC of known "
                         "targets by cosine to the TF (grn_auroc: inverted for repressors; chance "
                         "0.5; coexpression = Pearson across the --input cells). gene_annotation: "
                         "5-fold LDA balanced accuracy (chance 1 / classes). random_label_shuffle "
                         "= gene names permuted (control).")


def pretraining(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (from `tfmkit pretrain` or `tfmkit demo`)."),
    input: str = typer.Option(..., "--input", "-i", help="Held-out raw-count .h5ad / 10x .h5."),
    out: str = typer.Option("tfmkit-benchmark-pretraining", "--out", "-o", help="Output folder for results.csv and results.md."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts (default X)."),
    mask_rates: str = typer.Option("0.5,0.9", "--mask-rates", help="Comma-separated masking rates: the fraction of each cell's expressed genes hidden (--reveal top) or of its observable genes (--reveal random)."),
    reveal: str = typer.Option("top", "--reveal", help="top: each cell shows its most expressed genes, descending (GPL Suppl. D); random: the model's training reveal rule."),
    max_context: int = typer.Option(None, "--max-context", help="At most this many genes shown per cell (default: the model's training context K / N, so no cell feeds the model more tokens than it was trained on; GPL's context is 2048)."),
    n_seeds: int = typer.Option(1, "--n-seeds", help="Random maskings per rate (--reveal random; mean ± std)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per forward pass."),
    library_key: str = typer.Option(None, "--library-key", help="obs column of full-transcriptome total counts, for inputs that keep only a gene subset."),
    max_cells: int = typer.Option(1_000, "--max-cells", help="Held-out cells scored: a seeded subsample (metrics are means over cells; over 1,000 cells their standard error is ~0.003). Pass a larger number to score more."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --max-cells subsample."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out."),
) -> None:
    """Held-out full-transcriptome Spearman and binary correctness vs the gene-mean baseline (GPL Suppl. D)."""
    from tfmkit.evaluation.subsample import check_max_cells

    check_max_cells(max_cells)
    try:
        rates = [float(r) for r in _split(mask_rates)]
    except ValueError:
        raise TfmkitError(f"--mask-rates must be numbers like 0.5,0.9, got {mask_rates!r}") from None
    if reveal not in ("top", "random"):
        raise TfmkitError(f"--reveal must be top or random, got {reveal!r}")
    if reveal == "top" and n_seeds != 1:
        raise TfmkitError("--reveal top is deterministic; drop --n-seeds or use --reveal random")
    with results_dir(out, overwrite=overwrite):
        import tfmkit
        from tfmkit.data.io import read_anndata
        from tfmkit.evaluation.runners import benchmark_pretraining
        from tfmkit.inference import context_size

        m = tfmkit.load_model(model)
        adata = read_anndata(input, layer=layer)
        df = benchmark_pretraining(m, adata, mask_rates=rates, reveal=reveal, max_context=max_context,
                                   n_seeds=n_seeds, batch_size=batch_size, library_key=library_key,
                                   max_cells=max_cells, seed=seed)
        context = ("each cell's top-expressed genes (GPL Suppl. D)" if reveal == "top"
                   else "the model's training reveal rule")
        shown = df.dropna(subset=["context_genes"]).groupby("task", sort=False)["context_genes"].first()
        used = int(df["n_cells_used"].iloc[0])
        sub = f" (--max-cells {max_cells}, --seed {seed})" if used < adata.n_obs else ""
        _write_and_print(df, out, "Pretraining quality", overwrite,
                         f"Context: {context}, at most {max_context or context_size(m)} genes per "
                         f"cell (mean shown: {', '.join(f'{t} {v:.0f}' for t, v in shown.items())}); "
                         f"{used} of {adata.n_obs} cells{sub}. "
                         "spearman / binary_correctness: all observable genes (full transcriptome, "
                         "midranks); *_masked: only genes hidden from the model; poisson_loss is "
                         "meaningful for log1p-space objectives only; gene_mean = per-gene mean "
                         "profile of the other cells (baseline).")


def perturbation(
    input: str = typer.Option(None, "--input", "-i", help="Perturb-seq .h5ad (raw counts in X or --layer; perturbation/batch labels in obs; embeddings in obsm). Not needed with --simulate."),
    obsm: list[str] = typer.Option(None, "--obsm", help="obsm key(s) of the embeddings to benchmark; repeat the option or list several after one --obsm."),
    layout: str = typer.Option("tfmkit", "--layout", help="Column preset: tfmkit (perturbation/batch), replogle2022 or nadig2024 (gene/gem_group, control 'non-targeting'). Explicit key options override it."),
    perturbation_key: str = typer.Option(None, "--perturbation-key", help="obs column with the perturbation label (perturbed gene symbol); default from --layout."),
    batch_key: str = typer.Option(None, "--batch-key", help="obs column with the batch (e.g. gem_group); default from --layout."),
    control_key: str = typer.Option(None, "--control-key", help="obs column that flags controls (default: the perturbation column). Boolean columns are compared as booleans."),
    control_value: str = typer.Option(None, "--control-value", help="Value marking controls in --control-key: a string such as 'non-targeting', or true/false for a boolean column (default: true for boolean columns, else from --layout)."),
    gene_key: str = typer.Option(None, "--gene-key", help="obs column with the perturbed gene symbol for relationship recall, if the perturbation labels are not symbols."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts for baselines and the invertibility target (default X; 'raw' = adata.raw)."),
    baselines: str = typer.Option(PERTURBATION_BASELINES, "--baselines", help="Comma-separated baselines: raw, lognorm, hvg<N>, pca<N>, random_label_shuffle."),
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

    if layout not in LAYOUTS:
        raise TfmkitError(f"unknown --layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    keys = list(obsm or []) + list(extra_obsm or [])
    base = [] if no_baselines else _split(baselines)
    if simulate and keys:
        raise TfmkitError("--simulate produces no model embeddings; drop --obsm (baselines only)")
    if not simulate and not input:
        raise TfmkitError("pass --input FILE.h5ad, or --simulate for a simulated screen")
    with results_dir(out, overwrite=overwrite):
        sim_path = None
        if simulate and save_simulated:
            sim_path = check_output_file(Path(out) / "simulated_perturbseq.h5ad", overwrite=overwrite,
                                         option="--save-simulated path")
        adata, pk, bk, ck, cv, lay = _perturbation_input(
            input, simulate, layout, perturbation_key, batch_key, control_key, control_value, layer,
            dict(n_perturbations=sim_perturbations, cells_per_perturbation=sim_cells,
                 n_batches=sim_batches, effect_size=sim_effect_size, seed=seed), sim_path)
        _run_perturbation(adata, keys, base, pk, bk, ck, cv, lay, n_seeds, postprocessing, tasks,
                          databases, gene_key, n_null, out, overwrite,
                          f"SIMULATED (tfmkit.datasets.simulate_perturbseq, seed {seed})"
                          if simulate else f"`{input}`")


def _perturbation_input(input, simulate, layout, perturbation_key, batch_key, control_key,
                        control_value, layer, sim_kwargs, sim_path):
    """The benchmarked AnnData and its ``(perturbation, batch, control key, control value,
    layer)`` columns: simulated (optionally saved to ``sim_path``) or read from ``input``."""
    from tfmkit.cli.outputs import write_h5ad_atomic
    from tfmkit.data.io import read_anndata

    if simulate:
        from tfmkit.datasets.simulate import simulate_perturbseq

        src = read_anndata(input, layer=layer) if input else None
        typer.echo("simulating a Perturb-seq screen (SIMULATED data on real control counts) ...")
        adata = simulate_perturbseq(src, **sim_kwargs)
        if sim_path is not None:
            write_h5ad_atomic(adata, sim_path)
            typer.echo(f"wrote {sim_path}")
        return adata, "perturbation", "batch", "is_control", "true", None
    preset = LAYOUTS[layout]
    adata, lay = counts_source(read_anndata(input), layer)
    pk = perturbation_key or preset["perturbation_key"]
    cv = control_value if control_value is not None else (None if control_key else preset["control_value"])
    return adata, pk, batch_key or preset["batch_key"], control_key or pk, cv, lay


def _run_perturbation(adata, keys, base, pk, bk, ck, cv, lay, n_seeds, postprocessing, tasks,
                      databases, gene_key, n_null, out, overwrite, source) -> None:
    from tfmkit.evaluation.perturbation.report import write_perturbation_results
    from tfmkit.evaluation.perturbation.runner import benchmark_perturbation

    typer.echo(f"{adata.n_obs} cells; embeddings: {', '.join(keys) or 'none'}; baselines: "
               f"{', '.join(base) or 'none'}; {n_seeds} seed(s)")
    df = benchmark_perturbation(
        adata, obsm_keys=keys, perturbation_key=pk, batch_key=bk, control_key=ck,
        control_value=cv, baselines=base, layer=lay, n_seeds=n_seeds,
        postprocessings=_split(postprocessing), tasks=_split(tasks), databases=_split(databases),
        gene_key=gene_key, n_null=n_null, progress=True)
    notes = (f"Input: {source}; perturbation `{pk}`, batch `{bk}`, controls `{ck}` == `{cv}`; "
             f"{n_seeds} seed(s); post-processings {postprocessing}.")
    res = write_perturbation_results(df, out, notes=notes, overwrite=overwrite,
                                     simulated=bool(adata.uns.get("simulated", False)))
    typer.echo(res["table"])
    typer.echo(f"wrote {res['csv']} ({len(df)} rows, long format) and {res['md']}")


def perturbation_prediction(
    model: str = typer.Option(..., "--model", "-m", help="Model directory fine-tuned with `tfmkit finetune perturbation` (OUT/model)."),
    input: str = typer.Option(..., "--input", "-i", help="The Perturb-seq .h5ad the model was fine-tuned on (its held-out part is evaluated)."),
    out: str = typer.Option("tfmkit-benchmark-perturbation-prediction", "--out", "-o", help="Output folder for results.csv, results.md and per_perturbation.csv."),
    n_control: int = typer.Option(512, "--n-control", help="Control cells of the evaluation context fed to the model per perturbation (GPL: 1,024+)."),
    n_hvg: int = typer.Option(2000, "--n-hvg", help="Highly variable genes of mae_hvg (at most half the genes)."),
    layer: str = typer.Option(None, "--layer", help="Layer with raw counts (default X)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the control-cell inputs and their reveals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in --out."),
) -> None:
    """Perturbation prediction (GPL §4.6): model vs control_mean, train_mean, linear gene embedding."""
    from pathlib import Path

    extra = check_output_file(Path(out) / "per_perturbation.csv", overwrite=overwrite, suffix=".csv",
                              option="--out") if Path(out).is_dir() else None
    with results_dir(out, overwrite=overwrite):
        from tfmkit.data.io import read_anndata
        from tfmkit.evaluation.perturbation_prediction import (benchmark_perturbation_prediction,
                                                               load_perturbation_model)

        load_perturbation_model(model)  # a model of another task fails before reading the input
        adata = read_anndata(input, layer=layer)
        res, per = benchmark_perturbation_prediction(model, adata, n_control=n_control, n_hvg=n_hvg, seed=seed)
        sim = " (SIMULATED data)" if adata.uns.get("simulated", False) else ""
        r = res.iloc[0]
        notes = (f"Input: `{input}`{sim}; split `{r['split']}`, held out `{r['holdout']}`; predictions are "
                 f"the mean over up to {n_control} control cells of the evaluation context, each shown as "
                 "[perturbation token, random subsequence] (GPL §4.6); log1p(1e4 counts / library) space; "
                 "value = mean over perturbations (undefined values left out). Per perturbation: "
                 "per_perturbation.csv.")
        _write_and_print(res, out, "Perturbation prediction", overwrite, notes)
        per.to_csv(extra or Path(out) / "per_perturbation.csv", index=False)
