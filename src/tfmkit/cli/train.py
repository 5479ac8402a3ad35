"""``tfmkit pretrain``: train a model from a run config, or resume a run from its own config.

With ``--resume`` the run folder is the single source of truth: the config is rebuilt from
``RUN/config.yaml`` (its data paths, layer and schedule included), and any ``--config``,
``--data``, ``--layer`` or override that contradicts it is refused, naming the keys, before
anything is loaded or written (issue 11 item 1).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from tfmkit.cli.errors import INTERRUPTED
from tfmkit.errors import TfmkitError

DEFAULT_CONFIG = "txfm_tiny"
SHIPPED = ", ".join(sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
RUN_CONFIG = "config.yaml"  # written by tfmkit.training.pretrain into the run folder
MODEL_DIR = "model"
CHECKPOINT_CONFIG = "config.json"  # tfmkit.checkpoint.CONFIG: holds the checkpoint's step


def _flatten(d: dict, prefix: str = "") -> dict:
    """``{"train": {"steps": 3}}`` -> ``{"train.steps": 3}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix == "":
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def resume_config(out: Path, config: str | None, overrides: list[str]):
    """The run config of ``out`` (``out/config.yaml``) for ``--resume``; raises
    :class:`TfmkitError` when the run has no config or checkpoint, when ``--config`` is given,
    or when ``overrides`` change any saved value (the message names every such key)."""
    from tfmkit.config import load_config

    saved_path = out / RUN_CONFIG
    if not saved_path.is_file():
        raise TfmkitError(f"{out} has no {RUN_CONFIG}: there is no run to resume there; check --out, "
                          f"or start a new run without --resume")
    if not (out / MODEL_DIR / CHECKPOINT_CONFIG).is_file():
        raise TfmkitError(f"{out} has no checkpoint ({out / MODEL_DIR} is missing or incomplete): the "
                          "run stopped before its first checkpoint; start it again without --resume")
    saved = _flatten(load_config(saved_path).to_dict())
    given = _flatten(load_config(saved_path, overrides).to_dict())
    conflicts = ["--config"] if config is not None else []
    conflicts += [f"{k} (saved {saved.get(k)!r}, given {given[k]!r})"
                  for k in given if given[k] != saved.get(k)]
    if conflicts:
        raise TfmkitError(f"--resume continues {out} with its saved {RUN_CONFIG}, but the command line "
                          f"contradicts it: {', '.join(conflicts)}; drop these options (or start a "
                          f"new run with another --out)")
    return load_config(saved_path, overrides)


def _last_checkpoint_step(out: Path) -> int | None:
    try:
        return int(json.loads((out / MODEL_DIR / CHECKPOINT_CONFIG).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pretrain(
    config: str = typer.Option(None, "--config", "-c", help=f"Run YAML path or shipped config name ({SHIPPED}). Default: {DEFAULT_CONFIG}. Not with --resume."),
    data: list[str] = typer.Option(None, "--data", "-d", help="Raw-count .h5ad / 10x .h5 file; repeat for several datasets (gene panels). Default: the bundled BALF corpus."),
    out: str = typer.Option("runs/tfmkit", "--out", "-o", help="Run folder: config.yaml, train_log.csv and the model/ checkpoint."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint, with the run's own config.yaml (data and schedule included)."),
    layer: str = typer.Option(None, "--layer", help="AnnData layer holding raw counts (default X)."),
    overrides: list[str] = typer.Argument(None, help="Config overrides section.key=value, e.g. train.steps=1000 model.depth=4."),
) -> None:
    """Pretrain a model of any family (TxFM, BMFM, GPL-AR) from a run config (fp32 on CPU, bf16 on GPU).

    Ctrl-C keeps the last checkpoint; `tfmkit pretrain --out RUN --resume` continues it.
    """
    from tfmkit.config import load_config
    from tfmkit.training import pretrain as run_pretrain

    run = Path(out)
    ov = list(overrides or [])
    if data:
        ov.append(f"data.paths={json.dumps([str(p) for p in data])}")  # JSON is valid YAML
    if layer:
        ov.append(f"data.layer={json.dumps(layer)}")
    cfg = resume_config(run, config, ov) if resume else load_config(config or DEFAULT_CONFIG, ov)
    try:
        model_dir = run_pretrain(cfg, run, resume=resume)
    except KeyboardInterrupt:
        step = _last_checkpoint_step(run)
        cmd = f"tfmkit pretrain --out {shlex.quote(str(run))} --resume"
        if step is None:
            typer.echo(f"interrupted before the first checkpoint: nothing to resume in {run}; "
                       "run the same command again to start over", err=True)
        else:
            typer.echo(f"interrupted: the checkpoint of step {step} in {run / MODEL_DIR} is kept; "
                       f"continue with: {cmd}", err=True)
        raise typer.Exit(code=INTERRUPTED) from None
    typer.echo(f"model written to {model_dir}  (log: {run / 'train_log.csv'})")
