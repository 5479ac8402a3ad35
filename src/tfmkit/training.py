"""The training loop (SPEC §5): AdamW, one-cycle cosine, clipping, accumulation, checkpoints.

Family- and task-agnostic: the model comes from the family registry
(:func:`tfmkit.models.build_model`), the batches and the loss from the run's task
(:mod:`tfmkit.tasks`: ``task.collator(store)``, ``task.loss(model(batch), batch)``).
Read top to bottom: :func:`load_corpus` (data) -> :func:`build_training` (model, task, optimiser,
schedule) -> :func:`pretrain` (the loop). Exact resume: the batch of global step ``s`` depends only
on ``(seed, s)`` (see :func:`tfmkit.data.corpus.make_dataloader`), and the checkpoint stores the
weights, AdamW moments, scheduler position and RNG state, so a run resumed from step ``s`` ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from tfmkit import checkpoint as ckpt
from tfmkit.config import RunConfig
from tfmkit.data import keys as K
from tfmkit.errors import TfmkitError
from tfmkit.model_card import CardRecorder
from tfmkit.runtime import autocast_context, init_distributed, resolve_device  # noqa: F401 (API)
from tfmkit.schedule import OneCycleCosine  # noqa: F401 (API)
from tfmkit.train_log import LOG_FILE, CsvLog, progress as progress_bar

RUN_CONFIG = "config.yaml"


def load_corpus(cfg: RunConfig, adatas=None, vocab=None):
    """Build the count store (:class:`~tfmkit.data.store.CountStore`) of a run.

    ``adatas`` (name -> AnnData) wins and gives the in-memory
    :class:`~tfmkit.data.corpus.Corpus`; else ``cfg.data.paths`` (files, directories,
    manifests, a ``tfmkit prepare`` store or a SOMA experiment) go through
    :func:`tfmkit.data.sources.open_corpus`: loaded whole when their counts fit in
    ``data.max_in_memory_gb`` GB, read in row blocks otherwise; else the bundled datasets.
    """
    from tfmkit.data.corpus import Corpus

    if adatas is None and cfg.data.paths:
        from tfmkit.data.sources import open_corpus

        return open_corpus(cfg.data.paths, vocab=vocab, layer=cfg.data.layer, min_cells=cfg.data.min_cells,
                           allow_low_coverage=cfg.data.allow_low_coverage,
                           max_in_memory_gb=cfg.data.max_in_memory_gb)
    if adatas is None:
        from tfmkit.datasets import load_corpus as load_bundled

        adatas = load_bundled(tuple(cfg.data.datasets), qc=cfg.data.qc)
    return Corpus.from_adatas(adatas, vocab=vocab, min_cells=cfg.data.min_cells,
                              allow_low_coverage=cfg.data.allow_low_coverage)


@dataclass
class TrainingState:
    """Everything the loop mutates."""

    model: torch.nn.Module
    task: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    parent: dict | None = None
    """For a fine-tune (``train.init_from``): the parent model's record (``model`` dir, ``step``,
    ``family``, ``preset``, its ``task``) and the fine-tuning ``task``."""


def init_from_parent(model: torch.nn.Module, task: torch.nn.Module, cfg: RunConfig, vocab=None) -> dict:
    """Load the weights of the parent model ``cfg.train.init_from`` into ``model`` (and, when the
    parent was trained with the same task, its learned task parameters into ``task``); return
    the parent record stored in the fine-tune's ``config.json`` and model card."""
    from tfmkit.data.vocab import GeneVocab

    saved = ckpt.read_checkpoint(cfg.train.init_from)
    pcfg = saved["config"]
    if vocab is not None and list(GeneVocab.from_dict(saved["vocab"]).genes) != list(vocab.genes):
        raise TfmkitError(f"the data of this run are aligned to another gene vocabulary than the parent "
                          f"model {saved['dir']}; build the corpus with the parent's vocabulary")
    try:
        model.load_state_dict(saved["weights"])
    except RuntimeError as err:
        raise TfmkitError(f"parent model {saved['dir']} does not fit this run's model config "
                          f"({str(err).splitlines()[0]}); use the parent's model section") from None
    own = task.state_dict()
    sd = saved["criterion"]
    if sd and set(sd) == set(own) and all(sd[k].shape == own[k].shape for k in sd):
        task.load_state_dict(sd)
    ptrain = pcfg.get("train", {})
    return {"model": str(Path(saved["dir"]).resolve()), "step": int(pcfg.get("step", 0)),
            "family": pcfg.get("model", {}).get("family"), "preset": pcfg.get("model", {}).get("preset"),
            "parent_task": ptrain.get("task", "pretrain"), "parent_objective": ptrain.get("objective"),
            "task": cfg.train.task, "freeze": cfg.train.freeze}


def build_training(cfg: RunConfig, n_genes: int, device: torch.device, vocab=None) -> TrainingState:
    """Model (any registered family), task, AdamW and the one-cycle cosine schedule of TxFM §A.1.

    ``vocab`` gives encoders that match external gene tables the vocabulary's gene names.
    """
    from tfmkit.models import build_model
    from tfmkit.tasks import build_task

    task = build_task(cfg, n_genes)  # checks task x family before anything is built
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, n_genes, library_size=cfg.data.library_size,
                        vocab_genes=list(vocab.genes) if vocab is not None else None).to(device)
    task = task.to(device)
    t = cfg.train
    parent = init_from_parent(model, task, cfg, vocab) if t.init_from else None
    if t.freeze != "full":
        from tfmkit.finetune.freeze import apply_freeze

        apply_freeze(model, t.freeze, t.unfreeze_blocks)
        if t.freeze == "head" and not any(True for _ in task.parameters()):
            raise TfmkitError(f"train.freeze=head trains only the task's parameters, and task "
                              f"{t.task!r} has none; use full or partial")
    wd = t.weight_decay if t.weight_decay is not None else 1.0 / (t.lr * t.steps)
    # learned loss parameters (NB dispersion, depth-shift s0) are not decayed towards zero
    if t.decay not in ("all", "matrices"):
        raise TfmkitError(f"train.decay must be 'all' or 'matrices', not {t.decay!r}")
    if t.decay == "matrices":
        from tfmkit.optim import param_groups

        params = param_groups(model, task, wd)
    else:
        params = [{"params": [p for p in model.parameters() if p.requires_grad]},
                  {"params": list(task.parameters()), "weight_decay": 0.0}]
    # fused kernel on CUDA and CPU: on CPU it measured 10 ms vs 55 ms per optimizer step for the
    # per-tensor loop (TxFM-tiny, G = 20,000; +9% cells/s per training step; docs/performance.md)
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=wd,
                                  fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, OneCycleCosine(t.steps, t.warmup_frac))
    return TrainingState(model, task, optimizer, scheduler, parent=parent)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def training_loss(state: TrainingState, batch: dict, forward_model=None) -> torch.Tensor:
    """Mean per-cell loss of one batch (model forward + task loss); ``forward_model`` is the
    DDP wrapper of ``state.model`` when distributed."""
    model = forward_model or state.model
    if getattr(state.task, "encoder_only", False) and model is state.model:
        out = state.model.encode_cells(batch)  # the task reads only cell/token states
    else:
        out = model(batch)
    return state.task.loss(out, batch).mean()


@torch.no_grad()
def validation_loss(state: TrainingState, loader_iter, n_batches: int, device, precision) -> float:
    state.model.eval()
    state.task.eval()  # heads with dropout / batch norm (fine-tuning tasks)
    losses = []
    for _ in range(n_batches):
        batch = _to(next(loader_iter), device)
        with autocast_context(device, precision):
            losses.append(float(training_loss(state, batch)))
    state.model.train()
    state.task.train()
    return sum(losses) / max(len(losses), 1)


def _save(state: TrainingState, cfg: RunConfig, vocab, model_dir: Path, card_files=None) -> None:
    config = {**cfg.to_dict(), "n_genes": vocab.n_genes, "step": state.step,
              "tfmkit_version": __import__("tfmkit").__version__}
    if state.parent is not None or cfg.train.task != "pretrain":  # fine-tunes record both
        config.update(parent=state.parent, task=cfg.train.task)
    ckpt.save_checkpoint(
        model_dir, model=state.model, config=config, vocab=vocab, criterion=state.task,
        optimizer=state.optimizer,
        trainer_state={"step": state.step, "scheduler": state.scheduler.state_dict(),
                       "rng": torch.get_rng_state()},
        extra_files=card_files,
    )


def check_resume_config(cfg: RunConfig, out_dir: Path) -> None:
    """Refuse to resume ``out_dir`` with a config other than the one it was started with."""
    import yaml

    path = Path(out_dir) / RUN_CONFIG
    if not path.is_file():
        raise TfmkitError(f"{out_dir} has no {RUN_CONFIG}, so it is not a resumable tfmkit run; "
                          "start a new run instead of --resume")
    saved = RunConfig.from_dict(yaml.safe_load(path.read_text())).to_dict()
    now = cfg.to_dict()
    diff = sorted(f"{sec}.{k}" for sec in now for k in set(now[sec]) | set(saved.get(sec, {}))
                  if now[sec].get(k) != saved.get(sec, {}).get(k))
    if diff:
        raise TfmkitError(f"--resume would continue {out_dir} with a different config "
                          f"({', '.join(diff)} differ from its {RUN_CONFIG}); resume without "
                          "changing them, or start a new run in another --out")


def _restore(state: TrainingState, saved: dict) -> None:
    state.model.load_state_dict(saved["weights"])
    if saved["criterion"]:
        own = set(state.task.state_dict())
        sd = saved["criterion"]
        if not set(sd) <= own:  # written before tasks existed: the criterion's keys, unprefixed
            sd = {f"criterion.{k}": v for k, v in sd.items()}
        state.task.load_state_dict(sd)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["trainer_state"]["scheduler"])
    state.step = int(saved["trainer_state"]["step"])
    if "rng" in saved["trainer_state"]:
        torch.set_rng_state(saved["trainer_state"]["rng"])


def pretrain(cfg: RunConfig, out_dir: str | Path, *, adatas=None, resume: bool = False,
             stop_after: int | None = None, progress: bool = True, corpus=None) -> Path:
    """Pretrain a model and return its model directory ``out_dir/model``.

    Runs as one process or under ``torchrun`` (DDP: each rank reads its shard of every epoch;
    rank 0 writes logs and checkpoints).

    Parameters
    ----------
    cfg
        Run configuration (see :mod:`tfmkit.config`).
    out_dir
        Run folder: ``config.yaml``, ``train_log.csv`` and the checkpoint ``model/``.
    adatas
        Optional ``{name: AnnData}`` raw-count datasets (default: ``cfg.data`` paths/bundled).
    resume
        Continue from ``out_dir/model`` (weights, optimiser, schedule, RNG, data position).
    stop_after
        Stop (after checkpointing) once this global step is reached — used to simulate an
        interruption; the schedule still spans ``cfg.train.steps``.
    corpus
        A prebuilt :class:`~tfmkit.data.corpus.Corpus` (skips loading; used by ablations).
    """
    import yaml

    from tfmkit.data.corpus import make_dataloader

    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    if not resume and (model_dir / ckpt.WEIGHTS).exists():
        raise TfmkitError(f"{out_dir} already holds a trained model; pass --resume to continue it "
                          "or choose another --out")
    t = cfg.train
    rank, world, device = init_distributed(t.device)
    saved = ckpt.read_checkpoint(model_dir, with_optimizer=True) if resume else None
    if resume:
        check_resume_config(cfg, out_dir)
    given = corpus if corpus is not None else adatas
    if corpus is None:
        from tfmkit.data.vocab import GeneVocab

        vocab_from = saved["vocab"] if saved else (
            ckpt.read_checkpoint(t.init_from)["vocab"] if t.init_from else None)  # fine-tune: parent's genes
        corpus = load_corpus(cfg, adatas, GeneVocab.from_dict(vocab_from) if vocab_from else None)
    vocab = corpus.vocab
    state = build_training(cfg, vocab.n_genes, device, vocab)
    if saved is not None:
        _restore(state, saved)
    forward_model = state.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0 and not resume:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        os.replace(tmp, out_dir / RUN_CONFIG)

    split = getattr(state.task, "split", None)  # a task may split its own way (e.g. by label)
    train_idx, val_idx = (split(corpus, cfg.data.val_fraction, t.seed) if callable(split)
                          else corpus.split(cfg.data.val_fraction, seed=t.seed))
    collate = state.task.collator(corpus)
    micro = t.accumulate
    loader = make_dataloader(corpus, train_idx, batch_size=t.batch_size, seed=t.seed,
                             collate=collate, start_step=state.step * micro,
                             num_workers=t.num_workers, rank=rank, world_size=world)
    val_loader, n_val = None, 0
    if rank == 0 and t.val_every and len(val_idx) >= 1:  # same held-out batches every time
        vbs = min(t.batch_size, len(val_idx))
        val_loader = make_dataloader(corpus, val_idx, batch_size=vbs, seed=t.seed + 10_000,
                                     collate=collate, shuffle=False, drop_last=False)
        n_val = max(1, min(t.val_batches, math.ceil(len(val_idx) / vbs)))
    if t.patience and val_loader is None and rank == 0:
        raise TfmkitError("train.patience (early stopping) needs validation cells: set "
                          "data.val_fraction > 0 and train.val_every > 0")
    best_val, n_bad = math.inf, 0
    log = CsvLog(out_dir / LOG_FILE, append=resume) if rank == 0 else None
    end = min(t.steps, stop_after) if stop_after is not None else t.steps
    clip_params = list(state.model.parameters()) + list(state.task.parameters())
    card = (CardRecorder(cfg, corpus, model_dir, resume, device, in_memory=given is not None)
            if rank == 0 else None)
    it = iter(loader)
    bar = progress_bar(progress and rank == 0, total=t.steps, start=state.step)
    state.model.train()
    try:
        while state.step < end:
            state.optimizer.zero_grad(set_to_none=True)
            loss_sum, n_cells = 0.0, 0
            for j in range(micro):
                batch = _to(next(it), device)
                sync = nullcontext() if (world == 1 or j == micro - 1) else forward_model.no_sync()
                with sync, autocast_context(device, t.precision):
                    loss = training_loss(state, batch, forward_model) / micro
                loss.backward()
                loss_sum += float(loss.detach())
                n_cells += batch[K.GENE_IDS].shape[0] * world
            if not math.isfinite(loss_sum):
                raise TfmkitError(f"loss became {loss_sum} at step {state.step}; lower train.lr "
                                  "or check the input counts")
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(clip_params, t.grad_clip)
            lr = state.optimizer.param_groups[0]["lr"]
            state.optimizer.step()
            state.scheduler.step()
            state.step += 1
            val = None
            if val_loader is not None and (state.step % t.val_every == 0 or state.step == t.steps):
                val = validation_loss(state, iter(val_loader), n_val, device, t.precision)
            if log is not None:
                log.record(state.step, loss_sum, val, lr, n_cells,
                           force=state.step % t.log_every == 0 or state.step == end or val is not None)
            if bar is not None:
                bar.update(loss=loss_sum)
            if card is not None:
                card.cells += n_cells
            improved = False
            if t.patience and val is not None:
                improved = val < best_val
                best_val, n_bad = (val, 0) if improved else (best_val, n_bad + 1)
            save = (improved if t.patience else
                    state.step % t.checkpoint_every == 0 or state.step == end)
            if save:
                if rank == 0:
                    _save(state, cfg, vocab, model_dir, card.files(state))
                if world > 1:
                    torch.distributed.barrier()
            if t.patience and n_bad >= t.patience:
                break  # early stopping: model_dir holds the best validation checkpoint
    finally:
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
    return model_dir


