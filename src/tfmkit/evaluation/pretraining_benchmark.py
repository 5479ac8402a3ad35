"""The pretraining-quality benchmark runner (GPL §4.5, Suppl. D), with bounded cost.

**What the GPL paper does** (Suppl. D.1): each held-out cell's expressed genes are ordered by
expression, most expressed first; at masking rate ``r`` the model sees the first ``(1 − r)``
fraction of that sequence (50 % masking: the top half of the expressed genes) and predicts a
scalar for every vocabulary gene at the masking boundary; Spearman (midranks) and binary
correctness are computed over the full vocabulary. The paper states no cap on the context: it
is bounded by what its model reads (its training sequence length).

**What tfmkit does**: the same top-expressed context, ``round((1 − r) · n_e)`` of a cell's
``n_e`` expressed genes, **capped at the model's training context** ``K`` (TxFM: ``K`` revealed
genes; GPL-AR: ``N`` tokens; ``data.n_revealed``, :func:`tfmkit.inference.context_size`), so no
cell ever feeds the model more tokens than it was trained on: attention cost stays
``O(K²)`` per cell whatever the panel (without the cap, 50 % of a 20k-gene panel's ~1,700
expressed genes, or of its 20k observable genes in ``random`` mode, went through full
attention). When the cap binds, rates that differ only above it show the same context; the
command says so on stderr and records ``context_genes`` (mean input tokens per cell) per rate.
Scoring stays over the full transcriptome (it is the output, cheap). ``max_context`` overrides
the cap (e.g. GPL's 2048).

Memory is ``batch_size x G`` (cells are scored one batch at a time,
:func:`tfmkit.inference.reconstruct_batches`), and ``max_cells`` (default
:data:`DEFAULT_MAX_CELLS`) subsamples the held-out cells with a seed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.report import aggregate_seeds
from tfmkit.evaluation.subsample import check_max_cells, report_subsample, subsample_cells

DEFAULT_MASK_RATES = (0.5, 0.9)
#: Held-out cells scored by default. The metrics are means over cells of per-cell values whose
#: spread is ~0.05-0.1 (Spearman), so 1,000 cells give a standard error of ~0.002-0.003, below the
#: differences worth reporting, and keep the benchmark within minutes on a CPU at any input size.
DEFAULT_MAX_CELLS = 1_000
_METRICS = ("poisson_loss", "spearman", "spearman_masked", "binary_correctness",
            "binary_correctness_masked")


def benchmark_pretraining(model, adata, *, mask_rates: Sequence[float] = DEFAULT_MASK_RATES,
                          reveal: str = "top", max_context: int | None = None,
                          n_seeds: int = 1, layer: str | None = None, batch_size: int = 64,
                          name: str = "model", mean_baseline: bool = True,
                          library_key: str | None = None, allow_low_coverage: bool = False,
                          max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0,
                          ) -> pd.DataFrame:
    """Reconstruction quality of ``model`` on held-out ``adata`` at each masking rate (GPL
    Suppl. D): full-transcriptome Spearman (midranks) and binary correctness, beside the
    ``gene_mean`` baseline.

    ``reveal="top"`` (default, GPL Suppl. D.1): at rate ``r`` every cell shows the model its
    ``round((1 − r) · n_e)`` most expressed genes (``n_e`` = its expressed genes; at least 1, at
    most the cap) in descending order and the model predicts the whole profile (for the
    autoregressive family: the logits at the masking boundary). Deterministic, so ``n_seeds``
    must be 1. ``reveal="random"``: every cell reveals ``min(cap, max(1, round((1 − r) ·
    G_obs)))`` genes drawn by the model's training rule, ``G_obs`` = median observable genes
    per cell (with ``data.zero_fraction`` the rule's zero slots can round one token over);
    ``std`` over ``n_seeds`` draws. The cap is ``max_context``, by default (``None``)
    the model's training context ``K`` / ``N`` (see the module doc for the paper's protocol).

    ``max_cells`` (default 1,000; ``None`` = all): a seeded (``seed``) uniform subsample of
    the held-out cells, announced on stderr. Metrics of
    :func:`~tfmkit.evaluation.pretraining_quality.reconstruction_metrics` are averaged over
    cells (NaN cells skipped): ``spearman`` / ``binary_correctness`` over all observable genes
    (full transcriptome), ``*_masked`` over the genes not shown. The ``gene_mean`` baseline
    predicts each cell's profile from the per-gene mean lognorm of the *other* evaluation
    cells. Task names are ``mask<percent>`` (e.g. ``mask90``); extra columns ``context_genes``
    (mean input tokens per cell; NaN for ``gene_mean``), ``n_cells_used`` and ``max_cells``.
    ``library_key``: obs column of full-transcriptome totals for inputs that keep a gene subset
    (see :func:`tfmkit.inference.embed`); ``allow_low_coverage`` lets such a subset through the
    vocabulary-coverage check. A model without ``gene_logits`` is refused with one line.
    """
    from tfmkit import inference
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
    check_max_cells(max_cells)
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = inference.load_model(model)
    trained = inference.context_size(model)
    cap = trained if max_context is None else int(max_context)
    keep = subsample_cells(adata.n_obs, max_cells, seed=seed)
    report_subsample(adata.n_obs, keep, seed, "benchmark pretraining")
    cells = adata[keep].copy() if len(keep) < adata.n_obs else adata
    common = dict(batch_size=batch_size, layer=layer, library_key=library_key,
                  allow_low_coverage=allow_low_coverage)
    rows, context = [], {}
    for rate in mask_rates:
        task = f"mask{int(round(rate * 100))}"
        n_rev, tokens = None, []
        for s in range(n_seeds):
            if reveal == "top":
                kw = dict(n_revealed=cap, reveal="top", context_fraction=1.0 - rate, seed=s)
            else:
                if n_rev is None:
                    first = next(iter(inference.reconstruct_batches(
                        cells[: min(cells.n_obs, 64)], model, n_revealed=1, seed=s, forward=False,
                        **common)))
                    g_obs = float(np.median(first["observable"].sum(1)))
                    n_rev = min(cap, max(1, int(round((1 - rate) * g_obs))))
                kw = dict(n_revealed=n_rev, seed=s)
            scores, totals, n_tok = _score_model(inference.reconstruct_batches(cells, model, **kw, **common))
            tokens.append(n_tok)
            variants = [(name, scores)]
            if mean_baseline:
                variants.append(("gene_mean", _score_gene_mean(
                    inference.reconstruct_batches(cells, model, forward=False, **kw, **common), *totals)))
            for emb, per_cell in variants:
                for metric, values in per_cell.items():
                    rows.append({"embedding": emb, "task": task, "metric": metric,
                                 "value": float(np.nanmean(values)), "seed": s})
        n_tok = np.concatenate(tokens)
        context[task] = float(n_tok.mean())
        _note_cap(task, rate, n_tok, cap, trained, max_context, reveal)
    df = aggregate_seeds(pd.DataFrame(rows))
    df["context_genes"] = np.where(df["embedding"] == name, df["task"].map(context), np.nan)
    return df.assign(n_cells_used=len(keep), max_cells=pd.array([max_cells] * len(df), dtype="Int64"))


def _score_model(batches) -> tuple[dict, tuple, np.ndarray]:
    """Per-cell metrics of the model over the batches, the per-gene sums the ``gene_mean``
    baseline needs (:func:`_score_gene_mean`) and the input tokens per cell."""
    from tfmkit.evaluation import pretraining_quality as PQ

    per_cell = {m: [] for m in _METRICS}
    tgt_sum = n_obs = None
    tokens = []
    for part in batches:
        for metric, values in PQ.reconstruction_metrics(part).items():
            per_cell[metric].append(values)
        obs = np.asarray(part["observable"], bool)  # (B, G)
        tgt = np.where(obs, part["target"], 0.0)  # (B, G)
        if tgt_sum is None:
            tgt_sum = np.zeros(tgt.shape[1], dtype=tgt.dtype)
            n_obs = np.zeros(tgt.shape[1], dtype=np.int64)
        for row in tgt:  # row by row: the same float sums as numpy's axis-0 sum of all cells
            tgt_sum += row
        n_obs += obs.sum(0)
        tokens.append(np.asarray(part["n_tokens"]))
    return ({m: np.concatenate(v) for m, v in per_cell.items()}, (tgt_sum, n_obs),
            np.concatenate(tokens))


def mean_profile(rec: dict, tgt_sum: np.ndarray | None = None, n_obs: np.ndarray | None = None) -> dict:
    """The ``gene_mean`` baseline for a (batch of a) :func:`tfmkit.inference.reconstruct`
    result ``rec``, fit on cells other than the one it scores: each cell's prediction is the
    per-gene mean lognorm of all *other* evaluation cells observing the gene (leave-one-out
    from the totals ``tgt_sum`` / ``n_obs`` ``(G,)`` over all evaluation cells; by default
    those of ``rec`` itself), so it never sees the values it is scored on. A gene no other cell
    observes has no prior and is left out of that cell's scoring (a one-cell file scores NaN,
    not a perfect 1.0). Returns ``rec`` with ``pred`` / ``logits`` / ``observable`` replaced."""
    obs = np.asarray(rec["observable"], bool)  # (B, G)
    tgt = np.where(obs, rec["target"], 0.0)  # (B, G)
    if tgt_sum is None:
        tgt_sum, n_obs = tgt.sum(0), obs.sum(0)
    n_other = n_obs[None, :] - obs  # (B, G) cells other than i observing g
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = (tgt_sum[None, :] - tgt) / n_other  # (B, G)
    has_prior = n_other > 0  # (B, G)
    pred = np.where(has_prior, loo, 0.0).astype(np.float32)  # (B, G)
    return dict(rec, pred=pred, logits=pred, observable=obs & has_prior)


def _score_gene_mean(batches, tgt_sum: np.ndarray, n_obs: np.ndarray) -> dict:
    """Per-cell metrics of the ``gene_mean`` baseline (:func:`mean_profile`) over the batches,
    with the totals of all evaluation cells from :func:`_score_model`."""
    from tfmkit.evaluation import pretraining_quality as PQ

    per_cell = {m: [] for m in _METRICS}
    for part in batches:
        for metric, values in PQ.reconstruction_metrics(mean_profile(part, tgt_sum, n_obs)).items():
            per_cell[metric].append(values)
    return {m: np.concatenate(v) for m, v in per_cell.items()}


def _note_cap(task, rate, n_tok, cap, trained, max_context, reveal) -> None:
    """Say on stderr how often the context cap bound at this rate."""
    capped = float(np.mean(n_tok >= cap))
    if capped > 0:
        why = (f"the model's training context K = {trained}" if max_context is None
               else f"--max-context {max_context}")
        of = "their expressed genes" if reveal == "top" else "the observable genes"
        print(f"{task}: {100 * capped:.0f}% of cells showed {cap} genes ({why}) instead of "
              f"{100 * (1 - rate):.0f}% of {of}; mean context {n_tok.mean():.0f} genes",
              file=sys.stderr)
