"""Ablation runner (TxFM §5.2, Table 5, §C): train a grid of configs, evaluate, test vs default.

Every distinct cell (by name) of a :class:`~tfmkit.ablation.grid.Grid` is trained once per seed
in ``OUT/runs/<cell>/seed<s>`` with the *same corpus* (built once per data config); a folder
that already holds a finished model (or an evaluation) is reused, and one holding an
interrupted checkpoint is resumed, so an interrupted ablation continues when re-run. Each model
is evaluated by :func:`tfmkit.ablation.evaluate.evaluate_model` (the registered benchmark
runners) and compared with the default by :func:`tfmkit.ablation.table.compare_to_default`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tfmkit.ablation.evaluate import evaluate_model, load_eval_sets
from tfmkit.ablation.grid import Grid, cell_config, slug
from tfmkit.ablation.table import SIGNIFICANCE_NOTE, compare_to_default, format_ablation_table
from tfmkit.errors import TfmkitError


def corpus_gene_table(corpus, n_components: int = 64, *, seed: int = 0) -> pd.DataFrame:
    """Gene vectors from the training corpus for the ``pretrained`` gene encoder: truncated
    SVD (scikit-learn) of the lognorm cells x genes matrix, rows = right singular vectors x
    singular values. A data-derived stand-in for an external table (ESM-2, Gene2vec), which
    tfmkit does not ship; it sees no gene-set database, so gene recall stays uncontaminated."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    from tfmkit.data.normalize import lognorm

    X = lognorm(sp.vstack(corpus.counts).tocsr())
    k = int(min(n_components, min(X.shape) - 1))
    svd = TruncatedSVD(k, random_state=seed).fit(X)
    vec = svd.components_.T * svd.singular_values_  # (G, k)
    return pd.DataFrame(vec, index=pd.Index(corpus.vocab.genes, name="gene"),
                        columns=[f"svd{i}" for i in range(k)])


def _train_cell(cfg, run_dir: Path, corpus) -> Path:
    """Train (or reuse / resume) one cell; refuses a folder trained with another config."""
    from tfmkit import checkpoint as ckpt
    from tfmkit.training import pretrain

    model_dir = run_dir / "model"
    if (model_dir / ckpt.WEIGHTS).exists():
        saved = json.loads((model_dir / ckpt.CONFIG).read_text())
        want = cfg.to_dict()
        have = {k: saved.get(k) for k in want}
        for d in (want, have):  # the vocabulary list is filled in by training itself
            (d.get("model") or {}).get("gene_encoder_kwargs", {}).pop("vocab_genes", None)
        if json.dumps(have, sort_keys=True, default=str) != json.dumps(want, sort_keys=True, default=str):
            raise TfmkitError(f"{run_dir} holds a model trained with another config; use another "
                              "--out or move that folder away")
        if int(saved.get("step", 0)) >= cfg.train.steps:
            return model_dir
        return pretrain(cfg, run_dir, resume=True, progress=False, corpus=corpus)
    return pretrain(cfg, run_dir, progress=False, corpus=corpus)


def _corpus_key(cfg) -> str:
    d = cfg.data
    return json.dumps([d.datasets, d.qc, d.paths, d.layer, d.min_cells])


def run_ablation(grid: Grid, out, *, extra_overrides=(), overwrite: bool = False,
                 bh_family: str = "metric", progress: bool = True) -> dict:
    """Train and evaluate every cell x seed of ``grid`` under ``out``; write ``results.csv``
    (aggregated, with p-values), ``per_seed.csv`` and ``results.md``. Returns
    ``{"csv", "md", "table", "results"}``."""
    from tfmkit.training import load_corpus

    out = Path(out)
    if bh_family not in ("metric", "all"):
        raise TfmkitError(f"bh_family must be 'metric' or 'all', not {bh_family!r}")
    existing = [str(out / f) for f in ("results.csv", "results.md") if (out / f).exists()]
    if existing and not overwrite:
        raise TfmkitError(f"{', '.join(existing)} already exist; pass --overwrite (trained cells "
                          "are reused) or choose another --out")
    cells = grid.cells()
    jobs = [(c, s) for c in cells for s in grid.seeds]
    cfgs = {}
    for c, s in jobs:  # validate every config before training anything
        cfgs[(c.name, s)] = cell_config(grid, c, s, extra_overrides, out / "gene_tables")
    out.mkdir(parents=True, exist_ok=True)
    corpora: dict = {}
    _write_gene_tables(grid, cfgs[(cells[0].name, grid.seeds[0])], out / "gene_tables", corpora)
    eval_sets = load_eval_sets(grid.evaluation)
    bar = _bar(progress, len(jobs))
    frames = []
    try:
        for c, s in jobs:
            cfg = cfgs[(c.name, s)]
            run_dir = out / "runs" / slug(c.name) / f"seed{s}"
            ev_path = run_dir / "eval.csv"
            if bar:
                bar.update(bar.task_ids[0], description=f"{c.name} seed {s}")
            key = _corpus_key(cfg)
            if key not in corpora:
                corpora[key] = load_corpus(cfg)
            model_dir = _train_cell(cfg, run_dir, corpora[key])
            stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
            ev = None
            if ev_path.exists():
                ev = pd.read_csv(ev_path)
                if "stamp" not in ev or int(ev["stamp"].iloc[0]) != stamp:
                    ev = None
            if ev is None:
                ev = evaluate_model(model_dir, grid.evaluation, eval_sets, seed=s,
                                    objective=cfg.train.objective)
                ev["stamp"] = stamp
                ev.to_csv(ev_path, index=False)
            frames.append(ev.drop(columns="stamp").assign(embedding=c.name, seed=s))
            if bar:
                bar.advance(bar.task_ids[0])
    finally:
        if bar:
            bar.stop()
    per_seed = pd.concat(frames, ignore_index=True)
    res = compare_to_default(per_seed, grid, bh_family=bh_family)
    res.to_csv(out / "results.csv", index=False)
    per_seed[["embedding", "task", "metric", "value", "n", "seed"]].to_csv(out / "per_seed.csv", index=False)
    table = format_ablation_table(res, grid)
    md = (f"# Ablation: {Path(grid.source).stem}\n\nGrid `{grid.source}`; base `{grid.base}`, "
          f"shared overrides `{' '.join(list(grid.overrides) + list(extra_overrides))}`; seeds "
          f"{grid.seeds}.\n\n{table}\n{SIGNIFICANCE_NOTE}")
    (out / "results.md").write_text(md, encoding="utf-8")
    return {"csv": out / "results.csv", "md": out / "results.md", "table": table, "results": res}


def _write_gene_tables(grid: Grid, cfg, folder: Path, corpora: dict) -> None:
    from tfmkit.training import load_corpus

    for name, spec in grid.gene_tables.items():
        path = folder / f"{name}.csv"
        if path.exists():
            continue
        key = _corpus_key(cfg)
        if key not in corpora:
            corpora[key] = load_corpus(cfg)
        spec = dict(spec or {})
        table = corpus_gene_table(corpora[key], int(spec.get("n_components", 64)))
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(path)


def _bar(enabled: bool, total: int):
    import os

    if not enabled or os.environ.get("TFMKIT_NO_PROGRESS") is not None:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("ablate {task.description}"), BarColumn(),
                 TextColumn("{task.completed}/{task.total} models"), TimeElapsedColumn())
    p.add_task("", total=total)
    p.start()
    return p
