"""Ablation runner (TxFM §5.2, Table 5, §C): train a grid of configs, evaluate, test vs default.

A grid YAML (``configs/ablations/*.yaml``)::

    base: txfm_tiny                     # run config every cell starts from
    overrides: [train.steps=300]        # shared budget, applied to every cell
    seeds: [0, 1]                       # each cell is trained once per seed (train.seed)
    default: {name: default, overrides: []}
    groups:                             # one Table-5 sub-table per group
      loss:
        - {name: Poisson, default: true}            # the default row of this sub-table
        - {name: MSE, overrides: [train.objective=mse]}
    evaluation: {...}                   # optional, see EVAL_DEFAULTS
    gene_tables: {corpus_svd64: {n_components: 64}}  # optional, see corpus_gene_table

Every distinct cell (by name) is trained once per seed in ``OUT/runs/<cell>/seed<s>`` with the
*same corpus* (built once per data config); a folder that already holds a finished model (or an
evaluation) is reused, and one holding an interrupted checkpoint is resumed, so an interrupted
ablation continues when re-run. ``"{gene_tables}"`` in an override is replaced by the folder
where the grid's ``gene_tables`` were written.

Metrics per model (whichever are enabled): held-out reconstruction quality (GPL §4.5; runner
:func:`tfmkit.evaluation.runners.benchmark_pretraining`), zero-shot kNN cell-type accuracy and
macro F1 of the CLS embedding (k = 10, stratified 5-fold CV predictions, so every cell is
scored exactly once), and gene-gene relationship recall of encoder tokens / decoder weights
(TxFM §B.3; :func:`~tfmkit.evaluation.runners.benchmark_genes`).

Significance vs the default (TxFM §C): proportions with a known number of scored items
(``accuracy``; ``n`` = cells) use the pooled two-proportion z-test with the successes and items
summed over seeds; every other metric a two-sided Welch t-test over the per-seed values.
Gene recall is tested with the t-test, as in the paper (its known pairs are not independent, so
a z-test over millions of pairs would call every difference significant). p-values are adjusted
with Benjamini–Hochberg within each ``task/metric`` across all ablation cells (the paper's
family; ``bh_family="all"`` pools every comparison).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.significance import (  # noqa: F401 (re-exported)
    benjamini_hochberg,
    two_proportion_ztest,
    welch_ttest,
)

ABLATION_DIR = Path(__file__).parent / "configs" / "ablations"
PROPORTION_METRICS = frozenset({"accuracy"})
EVAL_DEFAULTS = {
    "celltype": ["pbmc68k", "wu2020"],
    "pretraining": {"dataset": "wu2020", "mask_rates": [0.9],
                    "metrics": ["poisson_loss", "spearman_masked", "binary_correctness_masked"]},
    "gene_recall": {"databases": ["corum", "hallmark"], "n_null_draws": 3, "n_null_pairs": 100_000},
}
#: Held-out labelled datasets: name -> (loader, label column, obs column of library sizes).
CELLTYPE_SETS = {"pbmc68k": ("load_pbmc68k", "bulk_labels", "n_counts"),
                 "wu2020": ("load_wu2020", "cluster_orig", None)}
LOG1P_OBJECTIVES = frozenset({"poisson_nll", "mse", "smooth_l1"})
MIN_CLASS_SIZE = 5


# ---------------------------------------------------------------------------------- the grid
@dataclass
class Cell:
    """One trained configuration (``name`` is its identity and folder)."""

    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class Grid:
    """A parsed ablation grid (see module doc)."""

    base: str
    overrides: list[str]
    default: Cell
    groups: dict[str, list[tuple[str, Cell]]]  # group -> [(row label, cell)]
    seeds: list[int]
    evaluation: dict
    gene_tables: dict
    source: str = ""

    def select(self, groups=None, max_cells: int | None = None, cells=None) -> "Grid":
        """A reduced grid: only ``groups`` (names), only ``cells`` (names), and at most
        ``max_cells`` non-default cells (in grid order); the default is always kept."""
        keep = dict(self.groups)
        if groups:
            bad = sorted(set(groups) - set(keep))
            if bad:
                raise TfmkitError(f"unknown ablation group(s) {bad}; the grid has {sorted(keep)}")
            keep = {g: keep[g] for g in keep if g in set(groups)}
        if cells:
            names = {c.name for rows in keep.values() for _, c in rows}
            bad = sorted(set(cells) - names - {self.default.name})
            if bad:
                raise TfmkitError(f"unknown cell(s) {bad}; the selected groups have {sorted(names)}")
            keep = {g: [(lab, c) for lab, c in rows if c.name in set(cells) or c.name == self.default.name]
                    for g, rows in keep.items()}
            keep = {g: rows for g, rows in keep.items() if any(c.name != self.default.name for _, c in rows)}
        if max_cells is not None:
            seen: list[str] = []
            out = {}
            for g, rows in keep.items():
                sel = []
                for label, cell in rows:
                    if cell.name != self.default.name and cell.name not in seen:
                        if len(seen) >= max_cells:
                            continue
                        seen.append(cell.name)
                    sel.append((label, cell))
                if any(c.name != self.default.name for _, c in sel):
                    out[g] = sel
            keep = out
        return Grid(self.base, self.overrides, self.default, keep, self.seeds, self.evaluation,
                    self.gene_tables, self.source)

    def cells(self) -> list[Cell]:
        """Distinct cells to train, default first."""
        out = {self.default.name: self.default}
        for rows in self.groups.values():
            for _, c in rows:
                out.setdefault(c.name, c)
        return list(out.values())


def _overrides(x, where: str) -> list[str]:
    if x is None:
        return []
    if not isinstance(x, list) or not all(isinstance(o, str) and "=" in o for o in x):
        raise TfmkitError(f"{where}: overrides must be a list of 'section.key=value' strings")
    return list(x)


def load_grid(name_or_path) -> Grid:
    """Parse a grid YAML (path, or a shipped name: ``txfm_table5``, ``encodings``, ``smoke``)."""
    p = Path(name_or_path)
    if not p.is_file():
        p = ABLATION_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        shipped = sorted(x.stem for x in ABLATION_DIR.glob("*.yaml"))
        raise TfmkitError(f"ablation grid {str(name_or_path)!r} not found; give a YAML path or "
                          f"one of {shipped}")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise TfmkitError(f"cannot parse grid {p}: {str(err).splitlines()[0]}") from None
    if not isinstance(d, dict) or not isinstance(d.get("groups"), dict) or not d["groups"]:
        raise TfmkitError(f"grid {p} needs a 'groups' mapping (group -> list of cells)")
    unknown = set(d) - {"base", "overrides", "default", "groups", "seeds", "evaluation",
                        "gene_tables", "description"}
    if unknown:
        raise TfmkitError(f"grid {p}: unknown key(s) {sorted(unknown)}")
    dd = d.get("default") or {}
    default = Cell(str(dd.get("name", "default")), _overrides(dd.get("overrides"), "default"))
    groups: dict[str, list[tuple[str, Cell]]] = {}
    cells = {default.name: default}
    for g, rows in d["groups"].items():
        if not isinstance(rows, list) or not rows:
            raise TfmkitError(f"grid {p}: group {g!r} must be a non-empty list of cells")
        out = []
        for r in rows:
            if not isinstance(r, dict) or "name" not in r:
                raise TfmkitError(f"grid {p}: every cell of group {g!r} needs a 'name'")
            label = str(r["name"])
            if r.get("default") or label == default.name:
                out.append((label, default))
                continue
            cell = Cell(label, _overrides(r.get("overrides"), f"cell {label}"))
            if label in cells and cells[label].overrides != cell.overrides:
                raise TfmkitError(f"grid {p}: cell name {label!r} is used with different overrides")
            cells[label] = cell
            out.append((label, cell))
        groups[str(g)] = out
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise TfmkitError(f"grid {p}: seeds must be a non-empty list of integers")
    ev = {**EVAL_DEFAULTS, **(d.get("evaluation") or {})}
    return Grid(str(d.get("base", "txfm_tiny")), _overrides(d.get("overrides"), "overrides"),
                default, groups, seeds, ev, dict(d.get("gene_tables") or {}), str(p))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "cell"


def cell_config(grid: Grid, cell: Cell, seed: int, extra: list[str] = (), tables_dir=None):
    """The :class:`~tfmkit.config.RunConfig` of one cell and seed: base, shared overrides,
    cell overrides, ``train.seed``, then ``extra`` (e.g. ``train.steps=N``)."""
    from tfmkit.config import load_config

    ov = list(grid.overrides) + list(cell.overrides) + [f"train.seed={seed}"] + list(extra)
    if tables_dir is not None:
        ov = [o.replace("{gene_tables}", str(Path(tables_dir).resolve())) for o in ov]
    return load_config(grid.base, ov)


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


# ---------------------------------------------------------------------------------- evaluation
def load_eval_sets(evaluation: dict) -> dict:
    """``{name: (AnnData, label_key, library_key)}`` of the enabled cell-type datasets, with
    classes of fewer than 5 cells left out (they cannot be split 5-fold)."""
    from tfmkit import datasets

    out = {}
    for name in evaluation.get("celltype") or []:
        if name not in CELLTYPE_SETS:
            raise TfmkitError(f"unknown cell-type evaluation set {name!r}; use {sorted(CELLTYPE_SETS)}")
        loader, label, lib = CELLTYPE_SETS[name]
        ad = getattr(datasets, loader)()
        vc = ad.obs[label].value_counts()
        out[name] = (ad[ad.obs[label].isin(vc[vc >= MIN_CLASS_SIZE].index).to_numpy()].copy(), label, lib)
    pq = evaluation.get("pretraining")
    if pq and pq["dataset"] not in out:
        out.setdefault("_pretrain", (getattr(datasets, CELLTYPE_SETS[pq["dataset"]][0])(), None, None))
    return out


def knn_cv_predict(X, labels, *, k: int = 10, folds: int = 5, seed: int = 0) -> dict:
    """kNN (``k = 10``) predictions from stratified ``folds``-fold CV (scikit-learn), so every
    cell is predicted once: ``accuracy`` = #correct / n, ``macro_f1`` of the pooled
    predictions, ``n`` = cells."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels).astype(str)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=k), np.asarray(X), y, cv=cv)
    return {"accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")), "n": len(y)}


def evaluate_model(model_dir, evaluation: dict, eval_sets: dict, *, seed: int = 0) -> pd.DataFrame:
    """Per-model rows ``task, metric, value, n`` (``n`` = items scored, for proportions)."""
    from tfmkit.inference import embed, load_model
    from tfmkit.evaluation.runners import benchmark_genes, benchmark_pretraining

    model = load_model(model_dir)
    rows = []
    for name in evaluation.get("celltype") or []:
        ad, label, lib = eval_sets[name]
        ad = ad.copy()
        embed(ad, model, key="X_abl", seed=seed, library_key=lib)
        res = knn_cv_predict(ad.obsm["X_abl"], ad.obs[label].to_numpy(), seed=seed)
        for m in ("accuracy", "macro_f1"):
            rows.append({"task": f"knn_{name}", "metric": m, "value": res[m], "n": res["n"]})
    pq = evaluation.get("pretraining")
    if pq:
        ad = (eval_sets.get(pq["dataset"]) or eval_sets["_pretrain"])[0]
        df = benchmark_pretraining(model, ad, mask_rates=tuple(pq.get("mask_rates", [0.9])),
                                   mean_baseline=False)
        log1p = model.run_config.train.objective in LOG1P_OBJECTIVES
        for r in df.itertuples(index=False):
            if r.metric not in pq.get("metrics", [r.metric]):
                continue
            # the Poisson loss of eq. 2 needs predictions in log1p space (not count logits)
            v = r.value if (r.metric != "poisson_loss" or log1p) else float("nan")
            rows.append({"task": f"recon_{pq['dataset']}_{r.task}", "metric": r.metric,
                         "value": v, "n": ad.n_obs})
    gr = evaluation.get("gene_recall")
    if gr:
        from tfmkit.evaluation.gene_recall import PCA_COMPONENTS
        from tfmkit.inference import gene_embeddings

        reps = {}
        for kind in ("encoder", "decoder"):
            try:
                reps[kind] = (gene_embeddings(model, kind=kind), PCA_COMPONENTS[kind])
            except TfmkitError:
                pass  # e.g. a gene encoder without a table
        df = benchmark_genes(representations=reps, databases=tuple(gr["databases"]),
                             n_null_draws=int(gr.get("n_null_draws", 3)),
                             n_null_pairs=int(gr.get("n_null_pairs", 100_000)), seed=seed)
        for r in df.itertuples(index=False):
            rows.append({"task": f"recall_{r.embedding[:3]}", "metric": r.metric,
                         "value": r.value, "n": r.n_pairs})
    return pd.DataFrame(rows, columns=["task", "metric", "value", "n"])


# ---------------------------------------------------------------------------------- running
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
            run_dir = out / "runs" / _slug(c.name) / f"seed{s}"
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
                ev = evaluate_model(model_dir, grid.evaluation, eval_sets, seed=s)
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


# ---------------------------------------------------------------------------------- tables
SIGNIFICANCE_NOTE = (
    "Values: mean ± std over seeds. `*`: different from the default row with BH-adjusted "
    "p < 0.05 (TxFM §C): two-proportion z-test for accuracies (cells scored, summed over seeds), "
    "Welch t-test over seeds for every other metric (needs ≥ 2 seeds). **Bold**: best in the "
    "group (↓ = lower is better). `knn_*`: zero-shot CLS embedding, kNN k=10, 5-fold CV; "
    "`recon_*`: held-out reconstruction at the given mask rate (Poisson loss only for "
    "log1p-space objectives); `recall_enc/dec`: gene-gene relationship recall of encoder "
    "tokens / decoder weights (chance = 0.10).\n")


def compare_to_default(per_seed: pd.DataFrame, grid: Grid, *, bh_family: str = "metric",
                       alpha: float = 0.05) -> pd.DataFrame:
    """Aggregate per-seed rows (``embedding, task, metric, value, n, seed``) over seeds and
    test every non-default cell against the default (module doc). Returns columns ``group,
    embedding, task, metric, value, std, n_seeds, n, test, p_value, p_adj, significant``."""
    groups_of: dict[str, list[str]] = {}
    for g, rows in grid.groups.items():
        for _, c in rows:
            if c.name != grid.default.name:
                groups_of.setdefault(c.name, []).append(g)
    ps = per_seed.copy()
    ps["successes"] = np.where(ps["metric"].isin(PROPORTION_METRICS),
                               np.rint(ps["value"] * ps["n"]), np.nan)
    keys = ["embedding", "task", "metric"]
    g = ps.groupby(keys, sort=False)
    agg = g.agg(value=("value", "mean"), n_seeds=("value", "count"), n=("n", "sum"),
                successes=("successes", "sum")).reset_index()
    agg["std"] = g["value"].agg(lambda v: float(np.std(v, ddof=1)) if v.notna().sum() > 1 else 0.0).to_numpy()
    default = grid.default.name
    vals = {k: v["value"].to_numpy() for k, v in g}
    tests, pvals = [], []
    for r in agg.itertuples(index=False):
        ref = (default, r.task, r.metric)
        if r.embedding == default or ref not in vals:
            tests.append("")
            pvals.append(np.nan)
            continue
        if r.metric in PROPORTION_METRICS and np.isfinite(r.value):
            d = agg[(agg.embedding == default) & (agg.task == r.task) & (agg.metric == r.metric)].iloc[0]
            tests.append("z")
            pvals.append(two_proportion_ztest(int(r.successes), int(r.n), int(d.successes), int(d.n)))
        else:
            tests.append("welch_t")
            pvals.append(welch_ttest(vals[(r.embedding, r.task, r.metric)], vals[ref]))
    agg["test"], agg["p_value"] = tests, pvals
    agg["p_adj"] = np.nan
    fam = agg[["task", "metric"]].agg("/".join, axis=1) if bh_family == "metric" else pd.Series("all", index=agg.index)
    for _, idx in agg.groupby(fam).groups.items():
        agg.loc[idx, "p_adj"] = benjamini_hochberg(agg.loc[idx, "p_value"].to_numpy())
    agg["significant"] = agg["p_adj"] < alpha
    agg.insert(0, "group", [",".join(groups_of.get(e, ["default"])) for e in agg["embedding"]])
    return agg[["group", "embedding", "task", "metric", "value", "std", "n_seeds", "n", "test",
                "p_value", "p_adj", "significant"]]


def format_ablation_table(res: pd.DataFrame, grid: Grid, *, precision: int = 3) -> str:
    """Markdown: one Table-5-style sub-table per group (rows = the group's cells with the
    default marked, columns = ``task / metric``), ``*`` where ``p_adj < 0.05``, best in bold."""
    from tfmkit.evaluation.report import LOWER_IS_BETTER

    cols = list(dict.fromkeys(zip(res["task"], res["metric"])))
    cell = {(r.embedding, r.task, r.metric): r for r in res.itertuples(index=False)}
    lines = []
    for gname, rows in grid.groups.items():
        header = ["cell"] + [f"{t} / {m}{' ↓' if m in LOWER_IS_BETTER else ''}" for t, m in cols]
        lines += [f"### {gname}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        best = {}
        for t, m in cols:
            v = [cell[(c.name, t, m)].value for _, c in rows if (c.name, t, m) in cell]
            v = [x for x in v if np.isfinite(x)]
            if v:
                best[(t, m)] = (min if m in LOWER_IS_BETTER else max)(v)
        for label, c in rows:
            out = [f"{label} (default)" if c.name == grid.default.name else label]
            for t, m in cols:
                r = cell.get((c.name, t, m))
                if r is None or not np.isfinite(r.value):
                    out.append("–")
                    continue
                s = f"{r.value:.{precision}f}"
                if r.n_seeds > 1:
                    s += f" ± {r.std:.{precision}f}"
                if r.significant:
                    s += "*"
                if best.get((t, m)) == r.value:
                    s = f"**{s}**"
                out.append(s)
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def register(app) -> None:
    """Add ``tfmkit ablate`` to the typer ``app``."""
    import typer

    @app.command()
    def ablate(
        grid: str = typer.Option(..., "--grid", "-g", help="Grid YAML path or shipped grid name (txfm_table5, encodings, smoke)."),
        out: str = typer.Option("tfmkit-ablation", "--out", "-o", help="Output folder: runs/<cell>/seed<s>/ (models, reused on re-run), results.csv, per_seed.csv, results.md."),
        groups: str = typer.Option(None, "--groups", help="Comma-separated groups to run (default: all)."),
        cells: str = typer.Option(None, "--cells", help="Comma-separated cell names to run (default: all); the default cell always runs."),
        max_cells: int = typer.Option(None, "--max-cells", help="Run at most this many non-default cells (grid order); the default always runs."),
        seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds, replacing the grid's seeds."),
        steps: int = typer.Option(None, "--steps", help="Training steps of every cell (replaces the grid budget)."),
        bh_family: str = typer.Option("metric", "--bh-family", help="Benjamini–Hochberg family: 'metric' (per task/metric, as TxFM §C) or 'all' comparisons."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace results.csv/results.md in --out (trained models are always reused, never deleted)."),
        overrides: list[str] = typer.Argument(None, help="Extra config overrides for every cell, e.g. train.batch_size=16."),
    ) -> None:
        """Train one model per grid cell and seed, evaluate, and write a Table-5-style table with significance vs the default."""
        g = load_grid(grid)
        if groups or cells or max_cells is not None:
            split = lambda v: [x.strip() for x in (v or "").split(",") if x.strip()] or None  # noqa: E731
            g = g.select(split(groups), max_cells, split(cells))
        if seeds:
            try:
                g.seeds = [int(x) for x in seeds.split(",") if x.strip()]
            except ValueError:
                raise TfmkitError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        extra = list(overrides or []) + ([f"train.steps={steps}"] if steps else [])
        cells = g.cells()
        typer.echo(f"{len(cells)} cells x {len(g.seeds)} seeds = {len(cells) * len(g.seeds)} models "
                   f"({', '.join(c.name for c in cells)}) -> {out}")
        res = run_ablation(g, out, extra_overrides=extra, overwrite=overwrite, bh_family=bh_family)
        typer.echo(res["table"])
        typer.echo(f"wrote {res['csv']}, {Path(out) / 'per_seed.csv'} and {res['md']}")
