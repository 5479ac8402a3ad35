"""Cell-type fine-tuning (issue 9 item 1): :func:`finetune_celltype`.

Label checks happen before any output is created: a missing ``label_key`` column or fewer than two
classes is a one-line :class:`~tfmkit.errors.TfmkitError`; cells whose label is missing (NaN or
empty) are **dropped and reported** (stderr, and ``n_dropped_unlabelled`` in the model's
``train.task_kwargs``). The task is :class:`tfmkit.tasks.celltype.CellTypeTask`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tfmkit.errors import TfmkitError
from tfmkit.finetune.run import finetune_config, load_parent, report, run, target_corpus


def clean_labels(adata, label_key: str, *, what: str = "label"):
    """``(kept AnnData view, labels as str, n_dropped)``: cells with a missing ``label_key``
    value are dropped; a missing column is an error."""
    if label_key not in adata.obs:
        cols = ", ".join(map(str, list(adata.obs.columns)[:12])) or "none"
        raise TfmkitError(f"obs has no {what} column {label_key!r}; available columns: {cols}")
    values = adata.obs[label_key]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip().isin(["", "nan", "NaN", "None"])).to_numpy()
    kept = adata[~missing] if missing.any() else adata
    return kept, kept.obs[label_key].astype(str).to_numpy(), int(missing.sum())


def class_weights(labels: np.ndarray, classes: list[str]) -> list[float]:
    """Balanced weights ``w_c = n / (C n_c)`` (scikit-learn's ``class_weight='balanced'``)."""
    counts = np.array([(labels == c).sum() for c in classes], dtype=np.float64)
    return (len(labels) / (len(classes) * counts)).tolist()


def finetune_celltype(model, adata, label_key: str, out, *, batch_key: str | None = None,
                      adversarial_batch: bool = False, mode: str = "full", unfreeze_blocks: int = 1,
                      head: str = "linear", pooling: str = "mean", loss: str = "weighted_ce",
                      steps: int = 300, lr: float = 3e-4, batch_size: int = 32,
                      weight_decay: float = 0.01, val_fraction: float = 0.1, val_every: int = 25,
                      patience: int = 4, adversary_weight: float = 1.0, init: str = "pretrained",
                      seed: int = 0, layer: str | None = None, library_key: str | None = None,
                      n_revealed: int | None = None, allow_low_coverage: bool = False,
                      progress: bool = False) -> Path:
    """Fine-tune ``model`` (a model directory) to classify ``adata.obs[label_key]``; returns the
    new model directory ``out/model``.

    ``mode``: ``head`` (frozen model, train the head), ``full`` or ``partial`` (the last
    ``unfreeze_blocks`` blocks; :mod:`tfmkit.finetune.freeze`). ``loss``: ``ce``,
    ``weighted_ce`` (balanced class weights) or ``focal``. Validation cells
    (``val_fraction``, stratified by ``batch_key`` x label) drive early stopping (``patience``
    evaluations every ``val_every`` steps; the best checkpoint is kept). With
    ``adversarial_batch`` a gradient-reversal adversary removes ``batch_key`` information from the
    embedding. ``init="random"`` trains the same architecture from random weights (control).
    ``n_revealed`` sets the genes each cell shows the model during fine-tuning and prediction
    (default: the parent's ``K``; a value above a cell's observable genes reveals them all).
    ``layer`` / ``library_key`` locate raw counts and library sizes as in :func:`tfmkit.embed`.
    """
    parent = load_parent(model)
    kept, labels, n_drop = clean_labels(adata, label_key)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise TfmkitError(f"obs[{label_key!r}] has a single class ({classes[0] if classes else 'none'}); "
                          "cell-type fine-tuning needs at least two")
    if n_drop:
        report(f"dropped {n_drop} of {adata.n_obs} cells with no {label_key!r} label")
    batches: list[str] = []
    if adversarial_batch:
        if batch_key is None:
            raise TfmkitError("--adversarial-batch needs --batch-key (the obs column of the batches)")
        if batch_key not in kept.obs:
            raise TfmkitError(f"obs has no batch column {batch_key!r}")
        batches = sorted(set(kept.obs[batch_key].dropna().astype(str)))
        if len(batches) < 2:
            raise TfmkitError(f"obs[{batch_key!r}] has {len(batches)} batch(es); the batch adversary needs two")
    elif batch_key is not None and batch_key not in kept.obs:
        raise TfmkitError(f"obs has no batch column {batch_key!r}")
    kwargs = dict(base_task=parent.run_config.train.task,
                  base_task_kwargs=dict(parent.run_config.train.task_kwargs),
                  classes=classes, label_key=label_key, head=head, pooling=pooling, loss=loss,
                  class_weights=class_weights(labels, classes), batch_key=batch_key, batches=batches,
                  adversary_weight=adversary_weight, n_dropped_unlabelled=n_drop)
    cfg = finetune_config(parent, "celltype", kwargs, init=init, val_fraction=val_fraction,
                          steps=steps, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          val_every=val_every, patience=patience, freeze=mode,
                          unfreeze_blocks=unfreeze_blocks, seed=seed, checkpoint_every=max(steps, 1))
    if n_revealed is not None:
        cfg = replace(cfg, data=replace(cfg.data, n_revealed=int(n_revealed)))
    from tfmkit.tasks import build_task

    build_task(cfg, parent.vocab.n_genes)  # option errors before any output
    corpus = target_corpus(kept, parent, layer=layer, library_key=library_key,
                           allow_low_coverage=allow_low_coverage)
    return run(cfg, out, corpus, progress=progress)
