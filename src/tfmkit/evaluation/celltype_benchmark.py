"""The cell-type / integration benchmark runner (TxFM Table 4; SPEC §6), with bounded cost.

:func:`benchmark_celltype` scores ``adata.obsm`` embeddings beside baselines computed on the same
cells. Cost (measured on 5,000 cells x 20,000 genes, ``benchmarks/benchmark_cost.py``):

- **memory** scales with cells x genes used and cells x neighbours: one embedding (or baseline)
  is held at a time (a dense ``raw`` / ``lognorm`` baseline is ``N x G`` float32); distances
  are never stored (one ``(2048, N)`` block at a time feeds the exact 90-NN and the silhouette
  sums); neighbour distances are recomputed in bounded blocks.
- **time**: when every seed uses all cells (``N ≤ n_cells``, the usual case below TxFM's 10,000)
  the seeds differ only in Leiden's seed, so each embedding gets one distance pass and one
  UMAP graph, and the ``random_label_shuffle`` control shares its ``lognorm`` pass (its shuffled
  labels enter the same pass). Larger inputs draw a new ``n_cells`` subset per seed, as TxFM.
- ``max_cells`` (``--max-cells``) keeps a seeded, label-stratified subset of the input before
  anything else (:mod:`tfmkit.evaluation.subsample`), bounding every cost above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import baselines as B
from tfmkit.evaluation import metrics_celltype as MC
from tfmkit.evaluation.inputs import counts_matrix, obs_column, require_cells, require_labels
from tfmkit.evaluation.report import aggregate_seeds
from tfmkit.evaluation.subsample import check_max_cells, report_subsample, subsample_cells
from tfmkit.progress import progress_bar as _progress

DEFAULT_CELLTYPE_BASELINES = ("raw", "lognorm", "hvg5000", "hvg2000", "hvg1024", "pca50",
                              "pca128", B.RANDOM_LABEL_SHUFFLE)
PROBES = ("linear", "l1_linear", "mlp", "knn")
MIN_CELLTYPE_CELLS = 20  # neighbour graphs, 5-fold-free probes and the 80/20 kNN split need this
_COUNTS_FIX = "point --layer at raw counts or pass --no-baselines"


def _baseline_names(names: Sequence[str], n_genes: int) -> list[str]:
    """Drop ``hvg<N>`` with ``N ≥ n_genes`` (identical to ``lognorm``)."""
    out = []
    for n in names:
        if n.startswith("hvg") and n[3:].isdigit() and int(n[3:]) >= n_genes:
            continue
        out.append(n)
    return out


def benchmark_celltype(adata, *, label_key: str | None = None, batch_key: str | None = None,
                       obsm_keys: Sequence[str] = (), baselines: Sequence[str] = DEFAULT_CELLTYPE_BASELINES,
                       layer: str | None = None, n_cells: int = 10_000, n_seeds: int = 10,
                       probes: Sequence[str] = PROBES, n_probe_seeds: int = 1,
                       max_cells: int | None = None, seed: int = 0,
                       progress: bool = False) -> pd.DataFrame:
    """Cell-type / integration benchmark of ``adata.obsm[k]`` for ``k`` in ``obsm_keys``.

    ``max_cells`` (default ``None`` = every cell): first keep a seeded (``seed``) subset of at
    most ``max_cells`` cells, stratified by the labels (by the batches in batch-only mode) so
    every label keeps at least 10 cells (:func:`~tfmkit.evaluation.subsample.subsample_cells`).
    The default keeps every cell because the per-seed subsample ``n_cells`` (TxFM: 10,000)
    already bounds the neighbour graphs; pass ``max_cells`` to bound the whole run (the
    baselines, probes and every seed) on large inputs — cost is linear in cells for the
    probes and graphs and quadratic for the distance pass, e.g. ≤ 2 GB on 5,000 cells x
    20,000 genes (``benchmarks/benchmark_cost.py``).

    For each seed ``s < n_seeds`` a subset of ``n_cells`` of those cells is drawn (all cells if
    fewer); every embedding and baseline is scored on the same subset with
    :func:`~tfmkit.evaluation.metrics_celltype.celltype_metrics` (Leiden seeded with ``s``),
    and, for the first ``n_probe_seeds`` seeds, with the ``probes`` (``linear``, ``mlp``,
    ``knn``; TxFM Table 4 reports probes from one run). Baselines (``raw``, ``lognorm``,
    ``hvg<N>``, ``pca<N>``, ``random_label_shuffle`` = ``lognorm`` scored against permuted
    labels) are computed from the raw counts in ``X``, ``layers[layer]`` or, with
    ``layer="raw"``, ``adata.raw``; ``hvg<N>`` with ``N`` ≥ the number of genes is skipped.

    Batch-only mode (``label_key=None``, ``batch_key`` given; for unlabelled atlases): only the
    batch-mixing metrics of :func:`~tfmkit.evaluation.metrics_celltype.batch_metrics`
    (``ilisi``, ``asw_batch``) are computed, with no probes and no label-shuffle control.
    Returns the long table (``embedding, task, metric, value, std, n_seeds``, plus
    ``n_cells_used`` and ``max_cells``). Reads ``.obs[label_key]``, ``.obs[batch_key]``,
    ``.obsm[k]``; writes nothing. Every input check runs before any work.
    """
    if n_seeds < 1 or n_probe_seeds < 0:
        raise TfmkitError("n_seeds must be ≥ 1 and n_probe_seeds ≥ 0")
    check_max_cells(max_cells)
    if label_key is None and batch_key is None:
        raise TfmkitError("give --label-key (cell types) and/or --batch-key (batch mixing only)")
    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise TfmkitError(f"unknown probe(s) {bad}; choose from {', '.join(PROBES)}")
    require_cells(adata.n_obs, MIN_CELLTYPE_CELLS, "the cell-type benchmark")
    labels = obs_column(adata, label_key, "label") if label_key is not None else None
    if labels is not None:
        require_labels(labels, label_key)
    batches = obs_column(adata, batch_key, "batch") if batch_key else None
    if labels is None and len(np.unique(batches)) < 2:
        raise TfmkitError(f"adata.obs[{batch_key!r}] has a single batch; batch-only mode needs "
                          "at least two batches")
    missing = [k for k in obsm_keys if k not in adata.obsm]
    if missing:
        raise TfmkitError(f"obsm key(s) {missing} not in adata.obsm (available: "
                          f"{', '.join(adata.obsm.keys()) or 'none'})")
    if not obsm_keys and not baselines:
        raise TfmkitError("nothing to benchmark: give --obsm keys or keep the baselines")
    n_genes = counts_matrix(adata, layer, check=False)[0].shape[1] if baselines else adata.n_vars
    base = _baseline_names(baselines, n_genes)
    shuffle = B.RANDOM_LABEL_SHUFFLE in base and labels is not None
    base_embs = [b for b in base if b != B.RANDOM_LABEL_SHUFFLE]
    if shuffle and "lognorm" not in base_embs:
        base_embs.append("lognorm")
    counts = counts_matrix(adata, layer, fix=_COUNTS_FIX)[0] if base_embs else None
    keep = subsample_cells(adata.n_obs, max_cells, seed=seed,
                           labels=labels if labels is not None else batches)
    if max_cells is not None:
        require_cells(len(keep), MIN_CELLTYPE_CELLS, "the cell-type benchmark (after --max-cells)")
    report_subsample(adata.n_obs, keep, seed, "benchmark celltype", label_key or batch_key)
    if len(keep) < adata.n_obs:
        labels = labels[keep] if labels is not None else None
        batches = batches[keep] if batches is not None else None
        counts = counts[keep] if counts is not None else None
    if labels is None:
        probes = ()
    scored = [b for b in base if b != B.RANDOM_LABEL_SHUFFLE]
    names = list(obsm_keys) + scored + ([B.RANDOM_LABEL_SHUFFLE] if shuffle else [])
    # what each embedding is computed from: its own obsm array or a baseline of the counts
    sources = {k: ("obsm", k) for k in obsm_keys}
    sources.update({b: ("baseline", b) for b in scored})
    if shuffle and "lognorm" not in sources:
        sources["lognorm"] = ("baseline", "lognorm")
    run = _Run(adata, keep, counts, labels, batches, probes, n_probe_seeds, n_cells, n_seeds)
    bar = _progress(progress, n_seeds * len(names), "cell-type benchmark")
    per_name: dict[str, list] = {n: [] for n in names}
    for name, (kind, key) in sources.items():
        with_shuffle = shuffle and name == "lognorm"
        own, ctrl = run.embedding_rows(name, kind, key, with_shuffle, name in per_name, bar)
        if name in per_name:
            per_name[name] += own
        if with_shuffle:
            per_name[B.RANDOM_LABEL_SHUFFLE] += ctrl
    if bar:
        bar.stop()
    df = aggregate_seeds(pd.DataFrame([r for n in names for r in per_name[n]]))
    return df.assign(n_cells_used=len(keep), max_cells=pd.array([max_cells] * len(df), dtype="Int64"))


class _Run:
    """The per-embedding loop of :func:`benchmark_celltype` over seeds (rows per seed)."""

    def __init__(self, adata, keep, counts, labels, batches, probes, n_probe_seeds, n_cells, n_seeds):
        self.adata, self.keep, self.counts = adata, keep, counts
        self.labels, self.batches = labels, batches
        self.probes, self.n_probe_seeds = probes, n_probe_seeds
        n = len(keep)
        self.seed_idx = [MC.subsample(n, n_cells, s) for s in range(n_seeds)]
        self.all_cells = all(len(i) == n for i in self.seed_idx)

    def _matrix(self, kind, key, idx, seed):
        if kind == "obsm":
            X = np.asarray(self.adata.obsm[key])
            return X[self.keep[idx]] if len(idx) < X.shape[0] else X
        counts = self.counts if len(idx) == self.counts.shape[0] else self.counts[idx]
        return B.baseline_embeddings(counts, [key], seed=seed)[key]

    def embedding_rows(self, name, kind, key, with_shuffle, wanted, bar):
        """Rows of ``name`` (if ``wanted``) and of the label-shuffle control on it (if
        ``with_shuffle``) for every seed."""
        own, ctrl = [], []
        geo = X = None
        for s, idx in enumerate(self.seed_idx):
            if geo is None or not self.all_cells:  # one pass for all seeds when they share cells
                # baselines on all cells are fit once with seed 0 (as TxFM's single dataset fit)
                X = self._matrix(kind, key, idx, 0 if self.all_cells else s)
                lab = self.labels[idx] if self.labels is not None else None
                bat = self.batches[idx] if self.batches is not None else None
                shuffles = ([B.shuffled_labels(lab, t) for t in range(len(self.seed_idx))]
                            if self.all_cells else [B.shuffled_labels(lab, s)]) if with_shuffle else []
                geo = (MC.embedding_geometry(X, [lab, *shuffles], bat) if lab is not None
                       else MC.embedding_geometry(X, [np.zeros(len(bat), np.int64)], bat,
                                                  n_neighbors=MC.N_LISI_NEIGHBORS))
            if wanted:
                scores = (MC.batch_metrics_from_geometry(geo) if lab is None
                          else MC.metrics_from_geometry(geo, 0, seed=s))
                own += _metric_rows(name, scores, s)
                if s < self.n_probe_seeds:
                    own += _probe_rows(name, X, lab, bat, self.probes, s)
                if bar:
                    bar.advance(bar.task_ids[0])
            if with_shuffle:
                j = 1 + s if self.all_cells else 1
                y = B.shuffled_labels(lab, s)
                ctrl += _metric_rows(B.RANDOM_LABEL_SHUFFLE, MC.metrics_from_geometry(geo, j, seed=s), s)
                if s < self.n_probe_seeds:
                    ctrl += _probe_rows(B.RANDOM_LABEL_SHUFFLE, X, y, bat, self.probes, s)
                if bar:
                    bar.advance(bar.task_ids[0])
        return own, ctrl


def _metric_rows(name, scores, seed) -> list[dict]:
    return [{"embedding": name, "task": MC.METRIC_TASKS[metric], "metric": metric,
             "value": value, "seed": seed} for metric, value in scores.items()]


def _probe_rows(name, X, y, bat, probes, seed) -> list[dict]:
    from tfmkit.evaluation import probes as P

    rows = []
    for kind in probes:
        res = (P.knn_probe(X, y, seed=seed) if kind == "knn"
               else P.probe_scores(X, y, bat, kind=kind, seed=seed))
        for metric in ("accuracy", "macro_f1"):
            rows.append({"embedding": name, "task": f"{kind}_probe", "metric": metric,
                         "value": res[metric], "seed": seed})
    return rows
