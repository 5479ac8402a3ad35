"""Perturbation-prediction fine-tuning (GPL §4.6; issue 9 item 3): :func:`finetune_perturbation`.

Splits (``split``):

- ``perturbation`` — held-out perturbations: the genes in ``holdout`` (default: a seeded random
  20% of the perturbations) are never perturbed in training, in any context;
- ``context`` — leave-one-context-out (GPL's LOOV): every perturbed cell of context ``holdout``
  (a value of ``context_key``; default the first context in sorted order) is held out.

Only perturbed cells of the training part are fine-tuned on (GPL: no control cell appears in the
input). Checks happen before any output exists: no control cells, a missing column, an unknown
hold-out value -> one-line :class:`~tfmkit.errors.TfmkitError`. Perturbations whose target gene
is not in the parent's vocabulary (no token can name them) are **dropped and reported** (stderr,
``dropped_targets`` / ``n_dropped_cells`` in ``train.task_kwargs``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tfmkit.errors import TfmkitError
from tfmkit.finetune.run import check_out, finetune_config, load_parent, report, run, target_corpus

#: obs conventions of Perturb-seq files: perturbation column, control label, context column.
LAYOUTS = {
    "tfmkit": {"perturbation_key": "perturbation", "control_value": "non-targeting", "context_key": "context"},
    "replogle2022": {"perturbation_key": "gene", "control_value": "non-targeting", "context_key": "cell_line"},
    "nadig2024": {"perturbation_key": "gene", "control_value": "non-targeting", "context_key": "cell_line"},
}
SPLITS = ("perturbation", "context")


def resolve_columns(adata, layout: str = "tfmkit", perturbation_key: str | None = None,
                    control_value: str | None = None, context_key: str | None = None) -> dict:
    """``{perturbation_key, control_value, context_key}`` from ``layout`` with overrides, checked
    against ``adata.obs`` (a missing perturbation column or no control cell is an error;
    ``context_key`` is ``None`` when the column is absent)."""
    if layout not in LAYOUTS:
        raise TfmkitError(f"unknown --layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    cols = dict(LAYOUTS[layout])
    for k, v in (("perturbation_key", perturbation_key), ("control_value", control_value),
                 ("context_key", context_key)):
        if v is not None:
            cols[k] = v
    pk = cols["perturbation_key"]
    if pk not in adata.obs:
        have = ", ".join(map(str, list(adata.obs.columns)[:12])) or "none"
        raise TfmkitError(f"obs has no perturbation column {pk!r} (layout {layout}); available: {have}; "
                          "pass --perturbation-key or --layout")
    labels = adata.obs[pk].astype(str).to_numpy()
    if not (labels == cols["control_value"]).any():
        raise TfmkitError(f"no control cells: no cell has obs[{pk!r}] == {cols['control_value']!r}; "
                          "perturbation prediction needs controls (the input of every prediction and "
                          "the control_mean baseline); pass --control-value")
    if cols["context_key"] not in adata.obs:
        if context_key is not None:
            raise TfmkitError(f"obs has no context column {context_key!r}")
        cols["context_key"] = None
    return cols


def contexts_of(adata, cols: dict) -> np.ndarray:
    """``(n_cells,)`` context of every cell (``"all"`` without a context column)."""
    ck = cols["context_key"]
    return (adata.obs[ck].astype(str).to_numpy() if ck is not None
            else np.full(adata.n_obs, "all", dtype=object))


def plan_split(adata, cols: dict, vocab, split: str = "perturbation", holdout=None, *,
               holdout_fraction: float = 0.2, train_controls: bool = False, seed: int = 0) -> dict:
    """Which perturbed cells train and what is evaluated; see the module doc.

    With ``train_controls`` the control cells of every context (the evaluation context's
    included: they are the inputs of its predictions anyway) are training examples too, with no
    perturbation token; no perturbed cell of a held-out perturbation or context ever is.
    Returns ``split``, ``holdout`` (list of genes, or a context), ``train_cells`` (bool mask),
    ``eval_contexts``, ``heldout_perturbations``, ``dropped_targets`` and ``n_dropped_cells``.
    """
    if split not in SPLITS:
        raise TfmkitError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    labels = adata.obs[cols["perturbation_key"]].astype(str).to_numpy()
    control = labels == cols["control_value"]
    perts = sorted(set(labels[~control]))
    if not perts:
        raise TfmkitError(f"no perturbed cells: every cell is a control ({cols['control_value']!r})")
    in_vocab = vocab.gene_index(perts) >= 0
    dropped = [p for p, ok in zip(perts, in_vocab) if not ok]
    perts = [p for p, ok in zip(perts, in_vocab) if ok]
    if not perts:
        raise TfmkitError(f"none of the {len(dropped)} perturbed genes (e.g. {dropped[:3]}) is in the model's "
                          "vocabulary, so no perturbation token can name them; check --perturbation-key")
    n_drop = int(np.isin(labels, dropped).sum())
    ctx = contexts_of(adata, cols)
    perturbed = ~control & np.isin(labels, perts)
    if split == "perturbation":
        if holdout is None:
            k = max(1, int(round(holdout_fraction * len(perts))))
            held = sorted(np.random.default_rng(seed).choice(perts, size=k, replace=False).tolist())
        else:
            held = sorted({h.strip() for h in (holdout if isinstance(holdout, (list, tuple)) else str(holdout).split(","))
                           if h.strip()})
            unknown = [h for h in held if h not in perts]
            if unknown:
                raise TfmkitError(f"--holdout perturbation(s) {unknown[:5]} are not perturbations of the input "
                                  f"(in the vocabulary); e.g. {perts[:5]}")
        if len(held) >= len(perts):
            raise TfmkitError("--holdout leaves no perturbation to train on")
        train = perturbed & ~np.isin(labels, held)
        eval_contexts = sorted(set(ctx))
        value = held
    else:
        if cols["context_key"] is None:
            raise TfmkitError("--split context needs a context column (obs 'context' for --layout tfmkit, "
                              "'cell_line' for replogle2022/nadig2024, or --context-key)")
        names = sorted(set(ctx))
        if len(names) < 2:
            raise TfmkitError(f"--split context needs >= 2 contexts in obs[{cols['context_key']!r}], found {names}")
        value = names[0] if holdout is None else str(holdout)
        if value not in names:
            raise TfmkitError(f"--holdout {value!r} is not a context of obs[{cols['context_key']!r}]; "
                              f"choose one of {', '.join(names)}")
        if not (control & (ctx == value)).any():
            raise TfmkitError(f"context {value!r} has no control cells; its predictions need them as input")
        train = perturbed & (ctx != value)
        held = sorted(set(labels[perturbed & (ctx == value)]))
        eval_contexts = [value]
    if train.sum() < 2:
        raise TfmkitError("fewer than 2 perturbed training cells remain after the split")
    if train_controls:  # unperturbed cells of every context, the held-out one included
        train = train | control
    return {"split": split, "holdout": value, "train_cells": train, "eval_contexts": eval_contexts,
            "heldout_perturbations": held, "dropped_targets": dropped, "n_dropped_cells": n_drop}


def finetune_perturbation(model, adata, out, *, layout: str = "tfmkit", split: str = "perturbation",
                          holdout=None, perturbation_key: str | None = None,
                          control_value: str | None = None, context_key: str | None = None,
                          mode: str = "full", unfreeze_blocks: int = 1, steps: int = 500,
                          lr: float = 3e-4, batch_size: int = 32, weight_decay: float = 0.01,
                          val_fraction: float = 0.1, val_every: int = 50, patience: int = 0,
                          n_revealed: int | None = None, scale_weight: float = 1.0,
                          train_controls: bool = False, token_readout: bool = True,
                          holdout_fraction: float = 0.2, init: str = "pretrained", seed: int = 0,
                          layer: str | None = None, library_key: str | None = None,
                          allow_low_coverage: bool = False, progress: bool = False) -> Path:
    """Fine-tune ``model`` (a model directory) to predict perturbed profiles (GPL §4.6); returns
    ``out/model``, whose ``train.task_kwargs`` record the split for
    :func:`tfmkit.evaluation.perturbation_prediction.benchmark_perturbation_prediction`.

    ``n_revealed``: genes of each cell after the perturbation token (default: the parent's
    ``K``). ``train_controls``: also train on the control cells of every context (see
    :func:`plan_split`; GPL trains on perturbed cells only). ``token_readout``: the head also reads
    the perturbation token's output state (:mod:`tfmkit.tasks.perturbation`; ``False``: GPL's
    CLS-only head). ``mode`` as in :func:`tfmkit.finetune.finetune_celltype` (GPL unfreezes everything:
    ``full``). ``init="random"``: the same architecture from random weights (control).
    """
    check_out(out)
    parent = load_parent(model)
    cols = resolve_columns(adata, layout, perturbation_key, control_value, context_key)
    plan = plan_split(adata, cols, parent.vocab, split, holdout, holdout_fraction=holdout_fraction,
                      train_controls=train_controls, seed=seed)
    if plan["dropped_targets"]:
        d = plan["dropped_targets"]
        report(f"dropped {plan['n_dropped_cells']} cells of {len(d)} perturbation(s) whose target is not in the "
               f"model's vocabulary ({', '.join(d[:5])}{', ...' if len(d) > 5 else ''})")
    train_ad = adata[plan["train_cells"]]
    labels = sorted(set(train_ad.obs[cols["perturbation_key"]].astype(str)) - {cols["control_value"]})
    index = dict(zip(labels, parent.vocab.gene_index(labels).tolist()))
    t = parent.run_config.train
    k = int(n_revealed or parent.run_config.data.n_revealed)
    kwargs = dict(base_task=t.task, base_task_kwargs=dict(t.task_kwargs),
                  perturbation_key=cols["perturbation_key"], target_index=index, n_revealed=k,
                  target_sum=1e4, scale_weight=scale_weight, control_value=cols["control_value"],
                  context_key=cols["context_key"], layout=layout, split=plan["split"],
                  holdout=plan["holdout"], heldout_perturbations=plan["heldout_perturbations"],
                  eval_contexts=plan["eval_contexts"], dropped_targets=plan["dropped_targets"],
                  n_dropped_cells=plan["n_dropped_cells"], train_controls=bool(train_controls),
                  token_readout=bool(token_readout))
    cfg = finetune_config(parent, "perturbation", kwargs, init=init, val_fraction=val_fraction, steps=steps,
                          lr=lr, batch_size=batch_size, weight_decay=weight_decay, val_every=val_every,
                          patience=patience, freeze=mode, unfreeze_blocks=unfreeze_blocks, seed=seed,
                          checkpoint_every=max(steps, 1))
    cfg = replace(cfg, data=replace(cfg.data, n_revealed=k))
    from tfmkit.tasks import build_task

    build_task(cfg, parent.vocab.n_genes)  # option / family errors before any output
    corpus = target_corpus(train_ad, parent, layer=layer, library_key=library_key,
                           allow_low_coverage=allow_low_coverage)
    return run(cfg, out, corpus, progress=progress)
