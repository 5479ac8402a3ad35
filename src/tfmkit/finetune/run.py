"""What every fine-tune shares: the parent model, the run config, an all-or-nothing ``--out``.

A fine-tune is an ordinary run of :func:`tfmkit.training.pretrain` whose config is the parent's
(architecture, vocabulary, data settings ``L``/``K``) with ``train.task``, ``train.task_kwargs``
and ``train.init_from`` (the parent directory) set; its model directory is a normal one
(``tfmkit embed`` and :func:`tfmkit.load_model` work) whose ``config.json`` and model card record
the parent model and the task. The run is written into a hidden sibling of ``out`` and renamed
into place only when it finished, so a failed fine-tune leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tfmkit.errors import TfmkitError


def load_parent(model):
    """The parent as a :class:`~tfmkit.bundle.TrainedModel` loaded from its directory (a fine-tune
    needs the directory: its weights are re-read and its path is recorded)."""
    from tfmkit.bundle import TrainedModel, load_model

    if isinstance(model, TrainedModel):
        if model.source is None:
            raise TfmkitError("fine-tuning needs a saved parent model; pass its model directory")
        model = model.source
    return load_model(model)


def check_out(out) -> Path:
    """``out`` must not exist yet and its parent directory must (checked before any work)."""
    out = Path(out)
    if out.exists():
        raise TfmkitError(f"{out} exists; choose another --out (a fine-tune never overwrites a folder)")
    if not out.absolute().parent.is_dir():
        raise TfmkitError(f"the directory {out.absolute().parent} of --out does not exist; create it first")
    return out


@contextlib.contextmanager
def atomic_run_dir(out):
    """Yield a temporary run folder next to ``out``; rename it to ``out`` on success, delete it
    on any failure (nothing partial is ever visible at ``out``)."""
    out = check_out(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def finetune_config(parent, task: str, task_kwargs: dict, *, init: str = "pretrained",
                    val_fraction: float | None = None, **train):
    """The parent's run config with ``train.task`` / ``task_kwargs`` / ``init_from`` and the given
    ``train`` options replaced. ``init="random"`` keeps the parent's architecture and vocabulary
    but starts from random weights (the from-scratch control of a fine-tune)."""
    if init not in ("pretrained", "random"):
        raise TfmkitError(f"init must be 'pretrained' or 'random', not {init!r}")
    cfg = parent.run_config
    data = cfg.data if val_fraction is None else replace(cfg.data, val_fraction=float(val_fraction))
    t = replace(cfg.train, task=task, task_kwargs=dict(task_kwargs),
                init_from=str(Path(parent.source).resolve()) if init == "pretrained" else None, **train)
    return replace(cfg, data=data, train=t)


def target_corpus(adata, parent, *, layer=None, library_key=None, allow_low_coverage=False):
    """The cells of ``adata`` aligned to the parent's vocabulary (one-dataset in-memory store)."""
    from tfmkit.data.corpus import Corpus

    return Corpus.from_adata_for_inference(adata, parent.vocab, layer=layer, library_key=library_key,
                                           allow_low_coverage=allow_low_coverage, name="finetune")


def run(cfg, out, corpus, *, progress: bool = False) -> Path:
    """Train ``cfg`` on ``corpus`` into ``out`` (all or nothing); returns ``out/model``."""
    from tfmkit.training import pretrain

    with atomic_run_dir(out) as tmp:
        pretrain(cfg, tmp, corpus=corpus, progress=progress)
    return Path(out) / "model"


def report(message: str) -> None:
    """A user-facing note (dropped cells, unseen labels) on stderr."""
    print(f"note: {message}", file=sys.stderr)
