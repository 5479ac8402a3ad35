"""Atomic, pickle-free checkpoints (SPEC §5).

A *model directory* holds::

    model.safetensors      weights (safetensors: no pickle is ever loaded)
    config.json            the RunConfig (model/data/train) + n_genes + tfmkit version
    vocab.json             the GeneVocab
    criterion.safetensors  the task's learned parameters (NB dispersion, depth-shift s0, heads), if any
    optimizer.safetensors  AdamW moments (resumable checkpoints only)
    trainer_state.json     step, scheduler state, optimizer hyper-parameters, RNG state
    MODEL_CARD.md, model_card.json, train_cells.npy   the model card (tfmkit.model_card)

It is written into a temporary sibling directory and swapped in with ``os.replace``, so a kill at
any point leaves either the previous or the new checkpoint complete (``<dir>.old`` is used as a
fallback if the process died between the two renames).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tfmkit.errors import TfmkitError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
CRITERION = "criterion.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


def _state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors: clone each one.
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON metadata."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: dict, vocab,
                    criterion: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    trainer_state: dict | None = None,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Atomically write a model directory at ``path`` (replacing an older checkpoint there).

    ``extra_files`` (name -> bytes) are written alongside, e.g. the model card
    (:mod:`tfmkit.model_card`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file(_state_tensors(model), str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str))
        vocab.save(tmp / VOCAB)
        if criterion is not None and len(criterion.state_dict()):
            save_file(_state_tensors(criterion), str(tmp / CRITERION))
        state = dict(trainer_state or {})
        if optimizer is not None:
            tensors, meta = _optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / OPTIMIZER))
            state["optimizer"] = meta
        if "rng" in state:
            save_file({"torch": state.pop("rng")}, str(tmp / "rng.safetensors"))
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2, default=str))
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = path.with_name(path.name + ".old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory, a run directory (``RUN/model``), a demo folder (``OUT/model``) or
    a Hub reference ``hf://owner/name[@revision]`` (:mod:`tfmkit.hub`)."""
    from tfmkit.hub import is_hub_ref, resolve_hub_model

    p = resolve_hub_model(path) if is_hub_ref(path) else Path(path)
    if not p.exists():
        raise TfmkitError(f"model directory {p} does not exist; pass the folder written by "
                          "`tfmkit pretrain --out` or `tfmkit demo` (it contains model.safetensors)")
    for cand in (p, p / "model", p.with_name(p.name + ".old")):
        if (cand / WEIGHTS).is_file() and (cand / CONFIG).is_file():
            return cand
    raise TfmkitError(f"{p} is not a tfmkit model directory (no {WEIGHTS} + {CONFIG}); "
                      "pass the folder written by `tfmkit pretrain --out` or `tfmkit demo`")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TfmkitError(f"checkpoint file {path} is corrupt or incomplete ({msg}); "
                          "re-run training or point at another checkpoint") from None


def read_checkpoint(path: str | Path, *, with_optimizer: bool = False) -> dict:
    """Read a model directory -> dict(config, vocab_dict, weights, criterion, optimizer, trainer_state)."""
    d = resolve_model_dir(path)
    try:
        config = json.loads((d / CONFIG).read_text())
        vocab = json.loads((d / VOCAB).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TfmkitError(f"checkpoint {d} has an unreadable config/vocab ({err}); "
                          "re-run training or point at another checkpoint") from None
    out = {"dir": d, "config": config, "vocab": vocab, "weights": _load_tensors(d / WEIGHTS)}
    out["criterion"] = _load_tensors(d / CRITERION) if (d / CRITERION).is_file() else {}
    if with_optimizer:
        state_file = d / TRAINER_STATE
        if not state_file.is_file() or not (d / OPTIMIZER).is_file():
            raise TfmkitError(f"{d} has no optimizer state, so it cannot be resumed; "
                              "start a new run instead of --resume")
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError as err:
            raise TfmkitError(f"{state_file} is corrupt ({err}); cannot resume") from None
        meta = state.pop("optimizer", None)
        out["optimizer"] = _optimizer_state(_load_tensors(d / OPTIMIZER), meta)
        rng_file = d / "rng.safetensors"
        if rng_file.is_file():
            state["rng"] = _load_tensors(rng_file)["torch"]
        out["trainer_state"] = state
    return out
