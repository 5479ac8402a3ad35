"""Inference API: load a model, embed cells, export gene embeddings, reconstruct expression.

All functions take an AnnData of raw counts; genes are matched to the model vocabulary by HGNC
symbol (after :func:`tfmkit.data.hgnc.harmonize_genes`), and genes the model does not know are
reported and ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.progress import progress_bar as _bar

DEFAULT_KEY = "X_tfmkit"


def load_model(path, *, device: str = "cpu") -> torch.nn.Module:
    """Load a model directory written by ``tfmkit pretrain`` / ``tfmkit demo`` (eval mode).

    The returned module has ``.vocab`` (:class:`~tfmkit.data.vocab.GeneVocab`), ``.config``
    (:class:`~tfmkit.models.ModelConfig`), ``.run_config`` (:class:`~tfmkit.config.RunConfig`)
    and ``.source`` (the directory it came from).
    """
    from tfmkit import checkpoint as ckpt
    from tfmkit.config import RunConfig
    from tfmkit.data.vocab import GeneVocab
    from tfmkit.models import build_model

    saved = ckpt.read_checkpoint(path)
    cfg = saved["config"]
    run = RunConfig.from_dict({k: cfg[k] for k in ("model", "data", "train") if k in cfg})
    vocab = GeneVocab.from_dict(saved["vocab"])
    model = build_model(run.model, int(cfg.get("n_genes", vocab.n_genes)))
    try:
        model.load_state_dict(saved["weights"])
    except RuntimeError as err:
        raise TfmkitError(f"checkpoint {saved['dir']} does not match its config "
                          f"({str(err).splitlines()[0]}); it is corrupt or from another version") from None
    model.vocab, model.run_config, model.source = vocab, run, str(saved["dir"])
    model.step = int(cfg.get("step", 0))
    return model.to(device).eval()


def _as_model(model):
    return load_model(model) if not isinstance(model, torch.nn.Module) else model


def _corpus_for(adata, model, layer=None, library_key=None):
    """Align ``adata`` to the model vocabulary as a one-dataset sparse corpus."""
    from tfmkit.data.corpus import Corpus

    if model.vocab is None:
        raise TfmkitError("the model has no gene vocabulary attached; load it with tfmkit.load_model")
    return Corpus.from_adata_for_inference(adata, model.vocab, layer=layer, library_key=library_key)


def _batches(corpus, model, *, n_revealed, batch_size, seed, view):
    data = model.run_config.data if hasattr(model, "run_config") else None
    n_revealed = n_revealed or (data.n_revealed if data else 2048)
    expressed_only = bool(data.expressed_only) if data else False
    library_size = data.library_size if data else model.config.library_size
    n = corpus.n_cells
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        g = torch.Generator().manual_seed(hash((seed, view, start)) % (2**63))
        yield idx, corpus.batch(idx, n_revealed=n_revealed, library_size=library_size,
                                generator=g, expressed_only=expressed_only)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed(adata, model, *, key: str = DEFAULT_KEY, n_revealed: int | None = None,
          n_views: int = 1, batch_size: int = 64, seed: int = 0, layer: str | None = None,
          library_key: str | None = None, progress: bool = False, copy: bool = False):
    """CLS embedding of every cell (TxFM ``e``) into ``adata.obsm[key]``.

    Each cell reveals ``n_revealed`` observable genes (default: the model's training ``K``),
    sampled with a fixed ``seed``; ``n_views > 1`` averages the CLS over independent maskings.
    ``library_key`` names an ``obs`` column of per-cell total counts, for inputs that keep only a
    gene subset (e.g. pbmc68k's 765 genes with ``n_counts`` from the full transcriptome).

    Keys written: ``.obsm[key]`` (cells x d float32), ``.uns['tfmkit']`` (provenance: model
    path, preset, training step, K, views, seed, genes used). ``.var``/``.X`` are untouched.
    Returns the AnnData if ``copy`` else ``None``.
    """
    model = _as_model(model)
    adata = adata.copy() if copy else adata
    corpus = _corpus_for(adata, model, layer, library_key)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    out = np.zeros((adata.n_obs, model.config.dim), dtype=np.float32)
    total = n_views * ((corpus.n_cells + batch_size - 1) // batch_size)
    bar = _bar(progress, total, "embed")
    for v in range(n_views):
        for idx, batch in _batches(corpus, model, n_revealed=n_revealed, batch_size=batch_size,
                                   seed=seed, view=v):
            batch = {k: t.to(device) for k, t in batch.items()}
            h = model.encode(batch[K.GENE_IDS], batch[K.VALUES], batch[K.PADDING])  # (B, K+1, D)
            out[idx] += h[:, 0].float().cpu().numpy() / n_views
            if bar:
                bar.advance(bar.task_ids[0])
    if bar:
        bar.stop()
    model.train(was_training)
    adata.obsm[key] = out
    prov = dict(adata.uns.get("tfmkit", {}))
    prov[key] = {
        "model": getattr(model, "source", None), "preset": model.config.preset,
        "step": getattr(model, "step", None), "n_revealed": int(n_revealed or model.run_config.data.n_revealed),
        "n_views": n_views, "seed": seed, "n_genes_used": int(len(corpus.observable[0])),
        "n_genes_vocab": model.vocab.n_genes, "tfmkit_version": __import__("tfmkit").__version__,
    }
    adata.uns["tfmkit"] = prov
    return adata if copy else None


def gene_embeddings(model, kind: str = "encoder") -> pd.DataFrame:
    """Per-gene learned vectors as a ``genes x dims`` DataFrame.

    ``kind="encoder"``: the input gene tokens ``E_i`` (special tokens excluded);
    ``kind="decoder"``: the rows of the decoder output layer (TxFM §B.3 "decoder gene weights").
    """
    from tfmkit.models.txfm import N_SPECIAL_TOKENS

    model = _as_model(model)
    if kind == "encoder":
        gene = model.embed.gene
        if not hasattr(gene, "gene_table"):
            raise TfmkitError(f"gene encoder {model.config.gene_encoder!r} has no gene table to export")
        table = gene.gene_table()[N_SPECIAL_TOKENS:]
    elif kind == "decoder":
        table = model.decoder.gene_table()
    else:
        raise TfmkitError(f"kind must be 'encoder' or 'decoder', not {kind!r}")
    arr = table.detach().float().cpu().numpy()
    return pd.DataFrame(arr, index=pd.Index(model.vocab.genes, name="gene"),
                        columns=[f"{kind}_{i}" for i in range(arr.shape[1])])


@torch.no_grad()
def reconstruct(adata, model, *, n_revealed: int | None = None, seed: int = 0,
                batch_size: int = 64, layer: str | None = None, library_key: str | None = None) -> dict:
    """Predict every vocabulary gene of every cell from ``n_revealed`` revealed genes.

    Returns numpy arrays over the model's ``G`` vocabulary genes: ``pred`` (N, G) predictions in
    log1p space (after the output activation), ``logits`` (N, G), ``target`` (N, G) lognorm
    targets, ``counts`` (N, G), ``observable`` (N, G) bool, ``revealed`` (N, G) bool, and
    ``genes`` (list). Dense: intended for evaluation subsets, not whole atlases.
    """
    model = _as_model(model)
    corpus = _corpus_for(adata, model, layer, library_key)
    device = _device_of(model)
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("pred", "logits", "target", "counts", "observable", "revealed")}
    for _, batch in _batches(corpus, model, n_revealed=n_revealed, batch_size=batch_size,
                             seed=seed, view=0):
        b = {k: t.to(device) for k, t in batch.items()}
        out = model(b[K.GENE_IDS], b[K.VALUES], b[K.PADDING])
        parts["pred"].append(out["pred"].float().cpu().numpy())
        parts["logits"].append(out["logits"].float().cpu().numpy())
        for name, key in (("target", K.TARGET), ("counts", K.COUNTS),
                          ("observable", K.OBSERVABLE), ("revealed", K.REVEALED)):
            parts[name].append(batch[key].cpu().numpy())
    res = {k: np.concatenate(v) for k, v in parts.items()}
    res["genes"] = list(model.vocab.genes)
    return res
