"""AnnData-facing benchmark runners (SPEC §6): each returns the long-format results table.

- :func:`benchmark_celltype` — clustering, batch-integration and probe metrics of
  ``adata.obsm`` embeddings beside baselines computed on the same cells (TxFM Table 4).
- :func:`benchmark_genes` — gene-level biology of a model's gene tables: gene-gene relationship
  recall (TxFM §B.3), GRN AUROC against a TF -> target table with a co-expression baseline and
  an LDA probe of a gene annotation (GPL §2.3, Suppl. F-G), beside PCA loadings and a gene-label
  shuffle.
- :func:`benchmark_pretraining` — held-out full-transcriptome Spearman and binary correctness
  at given masking rates with each cell's top-expressed genes as context (GPL Suppl. D), beside
  a per-gene mean-profile baseline.

None of them writes to ``adata``. Write the table with :func:`tfmkit.evaluation.report.write_results`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError
from tfmkit.progress import progress_bar as _progress
from tfmkit.evaluation import baselines as B
from tfmkit.evaluation import metrics_celltype as MC
from tfmkit.evaluation.inputs import counts_matrix, obs_column, require_cells, require_labels
from tfmkit.evaluation.report import aggregate_seeds
from tfmkit.evaluation.gene_benchmark import (GENE_TASKS, benchmark_genes, gene_representations,
                                              pca_loadings)

__all__ = ["DEFAULT_MASK_RATES", "DEFAULT_MAX_CONTEXT", "GENE_TASKS", "benchmark_celltype",
           "benchmark_genes", "benchmark_pretraining", "gene_representations", "pca_loadings"]

DEFAULT_CELLTYPE_BASELINES = ("raw", "lognorm", "hvg5000", "hvg2000", "hvg1024", "pca50",
                              "pca128", B.RANDOM_LABEL_SHUFFLE)
PROBES = ("linear", "l1_linear", "mlp", "knn")
DEFAULT_MASK_RATES = (0.5, 0.9)
DEFAULT_MAX_CONTEXT = 1024  # genes shown per cell at most in the top-expressed reconstruction
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
                       progress: bool = False) -> pd.DataFrame:
    """Cell-type / integration benchmark of ``adata.obsm[k]`` for ``k`` in ``obsm_keys``.

    For each seed ``s < n_seeds`` a subset of ``n_cells`` cells is drawn (all cells if fewer);
    every embedding and baseline is scored on the same subset with
    :func:`~tfmkit.evaluation.metrics_celltype.celltype_metrics` (Leiden seeded with ``s``),
    and, for the first ``n_probe_seeds`` seeds, with the ``probes`` (``linear``, ``mlp``,
    ``knn``; TxFM Table 4 reports probes from one run). Baselines (``raw``, ``lognorm``,
    ``hvg<N>``, ``pca<N>``, ``random_label_shuffle`` = ``lognorm`` scored against permuted
    labels) are computed from the raw counts in ``X``, ``layers[layer]`` or, with
    ``layer="raw"``, ``adata.raw``; ``hvg<N>`` with ``N`` ≥ the number of genes is skipped.

    Batch-only mode (``label_key=None``, ``batch_key`` given; for unlabelled atlases): only the
    batch-mixing metrics of :func:`~tfmkit.evaluation.metrics_celltype.batch_metrics`
    (``ilisi``, ``asw_batch``) are computed, with no probes and no label-shuffle control.
    Returns the long table (``embedding, task, metric, value, std, n_seeds``). Reads
    ``.obs[label_key]``, ``.obs[batch_key]``, ``.obsm[k]``; writes nothing. Every input check
    runs before any work.
    """
    if n_seeds < 1 or n_probe_seeds < 0:
        raise TfmkitError("n_seeds must be ≥ 1 and n_probe_seeds ≥ 0")
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
    if labels is None:
        probes = ()
    names = list(obsm_keys) + [b for b in base if b != B.RANDOM_LABEL_SHUFFLE] + (
        [B.RANDOM_LABEL_SHUFFLE] if shuffle else [])
    rows: list[dict] = []
    bar = _progress(progress, n_seeds * len(names), "cell-type benchmark")
    cache_key, cache = None, {}
    for seed in range(n_seeds):
        idx = MC.subsample(adata.n_obs, n_cells, seed)
        if base_embs and (cache_key is None or len(idx) < adata.n_obs):
            cache = B.baseline_embeddings(counts[idx], base_embs, seed=seed)
            cache_key = seed
        lab = labels[idx] if labels is not None else None
        bat = batches[idx] if batches is not None else None
        for name in names:
            if name == B.RANDOM_LABEL_SHUFFLE:
                X, y = cache["lognorm"], B.shuffled_labels(lab, seed)
            elif name in obsm_keys:
                X, y = np.asarray(adata.obsm[name])[idx], lab
            else:
                X, y = cache[name], lab
            scores = (MC.celltype_metrics(X, y, bat, seed=seed) if y is not None
                      else MC.batch_metrics(X, bat))
            for metric, value in scores.items():
                rows.append({"embedding": name, "task": MC.METRIC_TASKS[metric],
                             "metric": metric, "value": value, "seed": seed})
            if seed < n_probe_seeds:
                rows += _probe_rows(name, X, y, bat, probes, seed)
            if bar:
                bar.advance(bar.task_ids[0])
    if bar:
        bar.stop()
    return aggregate_seeds(pd.DataFrame(rows))


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


def benchmark_pretraining(model, adata, *, mask_rates: Sequence[float] = DEFAULT_MASK_RATES,
                          reveal: str = "top", max_context: int | None = DEFAULT_MAX_CONTEXT,
                          n_seeds: int = 1, layer: str | None = None, batch_size: int = 64,
                          name: str = "model", mean_baseline: bool = True,
                          library_key: str | None = None, allow_low_coverage: bool = False,
                          ) -> pd.DataFrame:
    """Reconstruction quality of ``model`` on held-out ``adata`` at each masking rate (GPL
    Suppl. D): full-transcriptome Spearman (midranks) and binary correctness, beside the
    ``gene_mean`` baseline.

    ``reveal="top"`` (default, GPL Suppl. D.1): at rate ``r`` every cell shows the model its
    ``round((1 − r) · n_e)`` most expressed genes (``n_e`` = its expressed genes; at least 1, at
    most ``max_context``, a compute cap: GPL uses ``N = 2048``; ``None`` = the model's training
    ``K`` / ``N``) in descending order and the
    model predicts the whole profile (for the autoregressive family: the logits at the masking
    boundary). Deterministic, so ``n_seeds`` must be 1. ``reveal="random"``: every cell reveals
    ``n = max(1, round((1 − r) · G_obs))`` genes drawn by the model's training rule, ``G_obs`` =
    median observable genes per cell; ``std`` over ``n_seeds`` draws.
    Metrics of :func:`~tfmkit.evaluation.pretraining_quality.reconstruction_metrics` are
    averaged over cells (NaN cells skipped): ``spearman`` / ``binary_correctness`` over all
    observable genes (full transcriptome), ``*_masked`` over the genes not shown. The
    ``gene_mean`` baseline (:func:`_mean_profile`) predicts each cell's profile from the
    per-gene mean lognorm of the *other* evaluation cells. Task names are ``mask<percent>``
    (e.g. ``mask90``). ``library_key``: obs column of full-transcriptome totals for inputs that
    keep a gene subset (see :func:`tfmkit.inference.embed`); ``allow_low_coverage`` lets such a
    subset through the vocabulary-coverage check. A model without ``gene_logits`` (e.g. BMFM
    MLM without a WCED head) is refused with one line.
    """
    from tfmkit import inference
    from tfmkit.evaluation import pretraining_quality as PQ
    from tfmkit.tasks.pretrain import REVEAL_MODES

    if not mask_rates or any(not 0 <= r < 1 for r in mask_rates):
        raise TfmkitError("mask rates must be in [0, 1), e.g. 0.5 0.9")
    if reveal not in REVEAL_MODES:
        raise TfmkitError(f"reveal must be one of {', '.join(REVEAL_MODES)}, got {reveal!r}")
    if n_seeds < 1 or (reveal == "top" and n_seeds != 1):
        raise TfmkitError("reveal='top' is deterministic: use n_seeds=1 (or reveal='random' "
                          "for several random maskings)")
    if max_context is not None and max_context < 1:
        raise TfmkitError(f"max_context must be >= 1, got {max_context}")
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = inference.load_model(model)
    common = dict(batch_size=batch_size, layer=layer, library_key=library_key,
                  allow_low_coverage=allow_low_coverage)
    rows = []
    for rate in mask_rates:
        task = f"mask{int(round(rate * 100))}"
        n_rev = None
        for seed in range(n_seeds):
            if reveal == "top":
                rec = inference.reconstruct(adata, model, n_revealed=max_context, reveal="top",
                                            context_fraction=1.0 - rate, seed=seed, **common)
            else:
                if n_rev is None:
                    probe = inference.reconstruct(adata[: min(adata.n_obs, 64)], model, n_revealed=1,
                                                  seed=seed, **common)
                    g_obs = float(np.median(probe["observable"].sum(1)))
                    n_rev = max(1, int(round((1 - rate) * g_obs)))
                rec = inference.reconstruct(adata, model, n_revealed=n_rev, seed=seed, **common)
            variants = [(name, rec)]
            if mean_baseline:
                variants.append(("gene_mean", _mean_profile(rec)))
            for emb, r in variants:
                for metric, per_cell in PQ.reconstruction_metrics(r).items():
                    rows.append({"embedding": emb, "task": task, "metric": metric,
                                 "value": float(np.nanmean(per_cell)), "seed": seed})
    return aggregate_seeds(pd.DataFrame(rows))


def _mean_profile(rec: dict) -> dict:
    """The ``gene_mean`` baseline, fit on cells other than the one it scores: each cell's
    prediction is the per-gene mean lognorm of all *other* evaluation cells observing the gene
    (leave-one-out), so it never sees the values it is scored on. A gene no other cell observes
    has no prior and is left out of that cell's scoring (a one-cell file scores NaN, not a
    perfect 1.0)."""
    obs = np.asarray(rec["observable"], bool)  # (N, G)
    tgt = np.where(obs, rec["target"], 0.0)  # (N, G)
    n_other = obs.sum(0)[None, :] - obs  # (N, G) cells other than i observing g
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = (tgt.sum(0)[None, :] - tgt) / n_other  # (N, G)
    has_prior = n_other > 0  # (N, G)
    pred = np.where(has_prior, loo, 0.0).astype(np.float32)
    out = dict(rec)
    out["pred"] = pred
    out["logits"] = pred
    out["observable"] = obs & has_prior
    return out
