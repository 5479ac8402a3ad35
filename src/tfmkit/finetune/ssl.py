"""SSL adaptation (TxFM §5, Table 3): continue the parent's own pretraining objective on the
target cells, then embed them with the adapted model. No labels are used."""

from __future__ import annotations

from pathlib import Path

from tfmkit.finetune.run import finetune_config, load_parent, run, target_corpus


def finetune_ssl(model, adata, out, *, steps: int = 200, lr: float | None = None, batch_size: int = 32,
                 weight_decay: float = 0.01, val_fraction: float = 0.05, mode: str = "full",
                 unfreeze_blocks: int = 1, seed: int = 0, layer: str | None = None,
                 library_key: str | None = None, allow_low_coverage: bool = False,
                 init: str = "pretrained", progress: bool = False) -> Path:
    """Continue pretraining ``model`` (a model directory) on the cells of ``adata`` with its own
    task and objective (the parent's learned loss parameters included); returns ``out/model``.

    Same reveal rule, ``K`` and ``L`` as the parent; ``mode`` as in
    :func:`tfmkit.finetune.finetune_celltype` (``head`` has nothing to train here).
    ``init="random"`` trains the parent's architecture, vocabulary and objective **from scratch on
    the target cells** (issue 12: the alternative to adapting a pretrained model). ``lr`` defaults
    to 3e-4 for adaptation and to the parent's pretraining learning rate from scratch.
    """
    parent = load_parent(model)
    t = parent.run_config.train
    if lr is None:
        lr = t.lr if init == "random" else 3e-4
    cfg = finetune_config(parent, t.task, t.task_kwargs, init=init, val_fraction=val_fraction, steps=steps, lr=lr,
                          batch_size=batch_size, weight_decay=weight_decay, freeze=mode,
                          unfreeze_blocks=unfreeze_blocks, seed=seed, patience=0,
                          val_every=max(steps // 4, 1), checkpoint_every=max(steps, 1))
    from tfmkit.tasks import build_task

    build_task(cfg, parent.vocab.n_genes)
    corpus = target_corpus(adata, parent, layer=layer, library_key=library_key,
                           allow_low_coverage=allow_low_coverage)
    return run(cfg, out, corpus, progress=progress)
