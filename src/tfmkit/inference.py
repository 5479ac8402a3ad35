"""Inference API: load a model, embed cells, export gene embeddings, reconstruct expression.

Every function takes a trained model as a :class:`~tfmkit.bundle.TrainedModel` (from
:func:`load_model`), a model directory, or a bare model module plus its ``vocab``; and an AnnData
of raw counts. Genes are matched to the model vocabulary by HGNC symbol (after
:func:`tfmkit.data.hgnc.harmonize_genes`); genes the model does not know are reported and ignored.
Only the model protocol is used (``cell_embedding``, ``gene_tables``, ``forward``), so every
registered family works.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pandas as pd
import torch

from tfmkit.bundle import TrainedModel, as_trained_model, load_model
from tfmkit.errors import TfmkitError
from tfmkit.progress import progress_bar as _bar

__all__ = ["DEFAULT_KEY", "TrainedModel", "context_size", "embed", "gene_embeddings", "load_model",
           "reconstruct", "reconstruct_batches"]

DEFAULT_KEY = "X_tfmkit"
#: Cell-embedding poolings of the model protocol (``FoundationModel.cell_embedding``).
POOLINGS = ("cls", "mean", "cls+mean")


def _corpus_for(adata, bm: TrainedModel, layer=None, library_key=None, allow_low_coverage=False,
                source=None):
    """Align ``adata`` to the model vocabulary as a one-dataset in-memory store."""
    from tfmkit.data.corpus import Corpus

    return Corpus.from_adata_for_inference(adata, bm.vocab, layer=layer, library_key=library_key,
                                           allow_low_coverage=allow_low_coverage,
                                           name=source or "input")


def _collator(bm: TrainedModel, corpus, n_revealed: int | None):
    """The batch function of the model's own task for new cells (see
    :meth:`tfmkit.tasks.Task.inference_collator`)."""
    from tfmkit.tasks import build_task

    task = build_task(bm.run_config, bm.vocab.n_genes)
    return task.inference_collator(corpus, n_revealed)


def cell_seeds(corpus, seed: int, view: int = 0) -> np.ndarray:
    """One 63-bit seed per cell of a one-dataset store, from the cell's own content: a BLAKE2b
    digest of ``(seed, view)``, its library size and its counts (gene indices and values) in
    the model's genes. The same cell gets the same seed in any batch, batch size or row order;
    two cells with identical counts share it (and so their reveal)."""
    X = corpus.counts[0]
    lib = np.asarray(corpus.library_sizes, dtype=np.float64)
    out = np.empty(corpus.n_cells, dtype=np.int64)
    head = np.asarray([seed, view], dtype=np.int64).tobytes()
    for i in range(corpus.n_cells):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        h = hashlib.blake2b(head, digest_size=8)
        h.update(lib[i].tobytes())
        h.update(np.asarray(X.indices[lo:hi], dtype=np.int64).tobytes())
        h.update(np.asarray(X.data[lo:hi], dtype=np.float64).tobytes())
        out[i] = int.from_bytes(h.digest(), "little") >> 1
    return out


def cell_batches(corpus, collate, *, batch_size: int, seed: int, view: int, device):
    """Batches of consecutive cells, drawn with one generator per cell seeded by
    :func:`cell_seeds`, so each cell's reveal, and hence its embedding, is a function of the cell
    alone. Collators that draw batch-wise (GPL-AR, BMFM) are wrapped by
    :class:`tfmkit.data.per_cell.PerCellCollator` to the same effect."""
    from tfmkit.data.per_cell import per_cell as per_cell_collator

    n = corpus.n_cells
    collate = per_cell_collator(collate)  # every family: one generator per cell
    seeds = cell_seeds(corpus, seed, view)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        g = [torch.Generator().manual_seed(int(s)) for s in seeds[idx]]
        batch = collate(corpus, idx, g)
        yield idx, batch, {k: t.to(device) for k, t in batch.items()}


@torch.no_grad()
def embed(adata, model, *, key: str = DEFAULT_KEY, vocab=None, n_revealed: int | None = None,
          n_views: int = 1, pooling: str = "cls", batch_size: int = 64, seed: int = 0,
          layer: str | None = None, library_key: str | None = None,
          allow_low_coverage: bool = False, source: str | None = None, progress: bool = False,
          copy: bool = False):
    """Cell embedding of every cell into ``adata.obsm[key]`` (TxFM: the CLS state ``e``).

    Each cell reveals genes by the model's training reveal rule (TxFM: ``K`` of its observable
    genes; with ``expressed_only`` its expressed genes up to ``K`` plus the ``zero_fraction`` of
    zeros), ``n_revealed`` overriding ``K``. The draw is seeded per cell from ``seed`` and the
    cell's own counts (:func:`cell_seeds`), so a cell's embedding does not depend on the batch
    size, the row order or the other cells; ``n_views > 1`` averages the embedding over
    independent reveals. ``pooling`` is ``cls``, ``mean`` (token states) or
    ``cls+mean``. ``layer`` names the layer with raw counts (``"raw"`` = ``adata.raw``);
    ``library_key`` an ``obs`` column of per-cell total counts, for inputs that keep only a gene
    subset (e.g. pbmc68k's 765 genes with ``n_counts`` from the full transcriptome). Low gene
    coverage of the vocabulary is refused unless ``allow_low_coverage``; ``source`` names the
    input in messages (e.g. its file name).

    Keys written: ``.obsm[key]`` (cells x D float32) and ``.uns['tfmkit'][key]`` (provenance:
    model path, family, preset, training step, K, reveal rule, views, pooling, seed, whether the
    reveal is seeded per cell, genes used, cells with no counts in the model's genes). Nothing else is changed. Returns the AnnData if ``copy``.
    """
    if pooling not in POOLINGS:
        raise TfmkitError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    bm = as_trained_model(model, vocab)
    adata = adata.copy() if copy else adata
    corpus = _corpus_for(adata, bm, layer, library_key, allow_low_coverage, source)
    collate = _collator(bm, corpus, n_revealed)
    module = bm.module
    was_training = module.training
    module.eval()
    out = None
    total = n_views * ((corpus.n_cells + batch_size - 1) // batch_size)
    bar = _bar(progress, total, "embed")
    for v in range(n_views):
        for idx, _, batch in cell_batches(corpus, collate, batch_size=batch_size, seed=seed, view=v,
                                      device=bm.device):
            e = module.cell_embedding(batch, pooling=pooling).float().cpu().numpy()  # (B, D)
            if out is None:
                out = np.zeros((adata.n_obs, e.shape[1]), dtype=np.float32)
            out[idx] += e / n_views
            if bar:
                bar.advance(bar.task_ids[0])
    if bar:
        bar.stop()
    module.train(was_training)
    n_empty = int((np.diff(corpus.counts[0].indptr) == 0).sum())
    if n_empty:
        print(f"warning: {n_empty} of {adata.n_obs} cells have no counts in the model's genes; "
              "their embeddings carry no information about them (uns['tfmkit'] records the count)",
              file=sys.stderr)
    adata.obsm[key] = out
    prov = dict(adata.uns.get("tfmkit", {}))
    spec = getattr(collate, "reveal", None)
    prov[key] = {
        "model": bm.source, "family": bm.family, "preset": bm.model_config.preset,
        "step": bm.step, "n_revealed": getattr(spec, "n_revealed", None),
        "expressed_only": getattr(spec, "expressed_only", None),
        "zero_fraction": getattr(spec, "zero_fraction", None),
        "per_cell_seed": True,  # every family (cell_batches)
        "n_views": n_views,
        "pooling": pooling, "seed": seed, "n_genes_used": int(len(corpus.observable[0])),
        "n_genes_vocab": bm.vocab.n_genes, "n_cells_no_counts": n_empty,
        "tfmkit_version": __import__("tfmkit").__version__,
    }
    adata.uns["tfmkit"] = prov
    return adata if copy else None


def gene_embeddings(model, kind: str = "encoder", *, vocab=None) -> pd.DataFrame:
    """Per-gene learned vectors as a ``genes x dims`` DataFrame.

    ``kind`` is a key of the family's ``gene_tables()``: for TxFM ``"encoder"`` (the input gene
    tokens ``E_i``) or ``"decoder"`` (the rows of the decoder output layer, TxFM §B.3).
    """
    bm = as_trained_model(model, vocab)
    tables = bm.module.gene_tables()
    if kind not in tables:
        raise TfmkitError(f"model family {bm.family!r} has no {kind!r} gene table; "
                          f"choose one of: {', '.join(sorted(tables))}")
    arr = tables[kind].detach().float().cpu().numpy()  # (G, d)
    return pd.DataFrame(arr, index=pd.Index(bm.vocab.genes, name="gene"),
                        columns=[f"{kind}_{i}" for i in range(arr.shape[1])])


def context_size(model, *, vocab=None) -> int:
    """The number of genes ``K`` (TxFM) / ``N`` (GPL) the model was trained to read per cell
    (``data.n_revealed`` of its run): the default context of :func:`embed` and
    :func:`reconstruct`, and the bound of the pretraining benchmark's revealed set."""
    return int(as_trained_model(model, vocab).run_config.data.n_revealed)


def reconstruct_batches(adata, model, *, vocab=None, n_revealed: int | None = None,
                        reveal: str = "random", context_fraction: float | None = None,
                        seed: int = 0, batch_size: int = 64, layer: str | None = None,
                        library_key: str | None = None, allow_low_coverage: bool = False,
                        forward: bool = True):
    """:func:`reconstruct` one batch of ``batch_size`` consecutive cells at a time, so memory
    stays ``batch_size x G`` however many cells there are.

    Every input check runs when this is called; it returns an iterator of dicts with the keys
    of :func:`reconstruct` for the cells ``cells`` (``(B,)`` row indices into ``adata``) plus
    ``n_tokens`` ``(B,)``: the input tokens each cell showed the model (non-padding slots).
    ``forward=False`` skips the model (no ``pred`` / ``logits``): the same targets, counts and
    revealed genes, e.g. for a baseline scored on the same reveals.
    """
    import inspect

    from tfmkit.data import keys as K
    from tfmkit.tasks import build_task

    bm = as_trained_model(model, vocab)
    if "gene_logits" not in bm.module.outputs:
        raise TfmkitError(f"model family {bm.family!r} does not predict per-gene expression; "
                          "reconstruction needs gene_logits")
    task = build_task(bm.run_config, bm.vocab.n_genes)
    if reveal != "random" or context_fraction is not None:
        if "reveal" not in inspect.signature(task.inference_collator).parameters:
            raise TfmkitError(f"train.task {task.name!r} has no reveal modes; use reveal='random'")
    corpus = _corpus_for(adata, bm, layer, library_key, allow_low_coverage)
    collate = (task.inference_collator(corpus, n_revealed) if reveal == "random" and context_fraction is None
               else task.inference_collator(corpus, n_revealed, reveal=reveal,
                                            context_fraction=context_fraction))
    needed = [k for k in (K.TARGET, K.COUNTS, K.OBSERVABLE, K.REVEALED) if k not in getattr(collate, "fields", ())]
    if needed:
        raise TfmkitError(f"train.task {task.name!r} builds batches without {', '.join(needed)}; "
                          "reconstruction needs whole-cell targets (e.g. train.objective wced_loss)")
    return _reconstruct_iter(bm, corpus, collate, batch_size, seed, forward)


@torch.no_grad()
def _reconstruct_iter(bm, corpus, collate, batch_size, seed, forward):
    from tfmkit.data import keys as K

    was_training = bm.module.training
    bm.module.eval()
    try:
        for idx, cpu_batch, batch in cell_batches(corpus, collate, batch_size=batch_size,
                                                  seed=seed, view=0,
                                                  device=bm.device if forward else "cpu"):
            part = {"cells": idx}
            if forward:
                out = bm.module(batch)
                logits = out.gene_logits.float()  # (B, G)
                pred = out.gene_pred if out.gene_pred is not None else logits  # (B, G)
                part["pred"] = pred.float().cpu().numpy()
                part["logits"] = logits.cpu().numpy()
            for name, k in (("target", K.TARGET), ("counts", K.COUNTS),
                            ("observable", K.OBSERVABLE), ("revealed", K.REVEALED)):
                part[name] = cpu_batch[k].cpu().numpy()
            pad = cpu_batch.get(K.PADDING)
            part["n_tokens"] = ((~pad.bool()).sum(1).numpy() if pad is not None  # (B,)
                                else np.full(len(idx), cpu_batch[K.GENE_IDS].shape[1]))
            yield part
    finally:
        bm.module.train(was_training)


def reconstruct(adata, model, *, vocab=None, n_revealed: int | None = None, reveal: str = "random",
                context_fraction: float | None = None, seed: int = 0,
                batch_size: int = 64, layer: str | None = None, library_key: str | None = None,
                allow_low_coverage: bool = False) -> dict:
    """Predict every vocabulary gene of every cell from ``n_revealed`` revealed genes.

    Needs a family that produces ``gene_logits`` (and ``gene_pred``). ``reveal="random"``: each
    cell reveals genes by the model's training rule (``n_revealed`` overriding ``K``, seeded per
    cell). ``reveal="top"`` (GPL Suppl. D.1): each cell reveals its most expressed genes in
    descending order, ``round(context_fraction * #expressed)`` of them (all expressed genes when
    ``None``; at least 1, at most ``n_revealed``, default the training ``K`` / ``N``); for the
    autoregressive family the prediction is the logits at that masking boundary.
    Returns numpy arrays over the model's ``G`` vocabulary genes: ``pred`` (N, G) predictions
    after the output activation (log1p space for TxFM), ``logits`` (N, G), ``target`` (N, G)
    lognorm targets, ``counts`` (N, G), ``observable`` (N, G) bool, ``revealed`` (N, G) bool,
    ``n_tokens`` (N,) input tokens per cell, and ``genes`` (list). Dense: intended for
    evaluation subsets, not whole atlases (:func:`reconstruct_batches` streams batches).
    """
    bm = as_trained_model(model, vocab)
    parts = list(reconstruct_batches(adata, bm, n_revealed=n_revealed, reveal=reveal,
                                     context_fraction=context_fraction, seed=seed,
                                     batch_size=batch_size, layer=layer, library_key=library_key,
                                     allow_low_coverage=allow_low_coverage))
    keys = ("pred", "logits", "target", "counts", "observable", "revealed", "n_tokens")
    res = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    res["genes"] = list(bm.vocab.genes)
    return res
