"""``tfmkit hub save|push``: share a model directory in the Hugging Face Hub layout (:mod:`tfmkit.hub`).

Loading needs no command: every ``--model`` option (and ``tfmkit.load_model``) accepts
``hf://OWNER/NAME[@REVISION]``, resolved through the local Hub cache (works offline for models
downloaded before).
"""

from __future__ import annotations

import typer


def save(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (RUN/model, OUT/model) or hf://OWNER/NAME."),
    out: str = typer.Option(..., "--out", "-o", help="New folder: the shareable files + README.md model card."),
) -> None:
    """Write a model's shareable files (weights, config, vocabulary, card; no optimizer state) into a new folder."""
    from tfmkit.hub import save_pretrained

    folder = save_pretrained(model, out)
    typer.echo(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))


def push(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (RUN/model, OUT/model)."),
    repo: str = typer.Option(..., "--repo", help="Hub repository OWNER/NAME (created if needed)."),
    public: bool = typer.Option(False, "--public", help="Create the repository public (default private)."),
    revision: str = typer.Option(None, "--revision", help="Branch to upload to (default main)."),
) -> None:
    """Upload a model to the Hugging Face Hub (needs network and `huggingface-cli login`)."""
    from tfmkit.hub import push_to_hub

    url = push_to_hub(model, repo, private=not public, revision=revision)
    typer.echo(f"uploaded to {repo}: {url}; load it with --model hf://{repo}")
