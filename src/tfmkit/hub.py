"""Share models through the Hugging Face Hub layout (issue 11 Part B item 1).

A tfmkit model directory already follows the Hub's layout (``config.json`` +
``model.safetensors``, no pickle). This module adds the three steps a user expects:

- :func:`save_pretrained` writes the shareable subset of a model directory into a new folder:
  weights, config, vocabulary, learned loss parameters, the training-cell fingerprints (the
  leakage check of ``benchmark --model``), ``model_card.json`` and the card as ``README.md`` with
  the Hub's YAML metadata (``library_name: tfmkit``); optimizer and RNG state stay behind.
- :func:`push_to_hub` uploads that folder with :class:`huggingface_hub.HfApi`.
- ``tfmkit.load_model("hf://owner/name[@revision]")`` (and every ``--model`` option) resolves the
  reference with :func:`huggingface_hub.snapshot_download`, which uses the local Hub cache and
  works offline (``HF_HUB_OFFLINE=1``) for models downloaded before.

Download, caching, authentication and upload are huggingface_hub's (the optional extra
``tfmkit[hub]``); nothing here re-implements them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tfmkit.errors import TfmkitError

HUB_PREFIX = "hf://"
#: Files of a model directory that are shared (the rest is training state: optimizer, RNG).
SHARED_FILES = ("config.json", "model.safetensors", "vocab.json", "criterion.safetensors",
                "model_card.json", "train_cells.npy")
CARD = "README.md"  # the Hub shows a repository's README.md as its model card


def is_hub_ref(path) -> bool:
    """True for ``hf://owner/name[@revision]`` references."""
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``"hf://owner/name@rev"`` -> ``("owner/name", "rev")`` (revision ``None`` when absent)."""
    body = ref[len(HUB_PREFIX):] if ref.startswith(HUB_PREFIX) else ref
    repo, _, rev = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise TfmkitError(f"{ref!r} is not a Hub model reference; write hf://OWNER/NAME or hf://OWNER/NAME@REVISION")
    return repo, rev or None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise TfmkitError("Hub models need huggingface_hub: pip install 'tfmkit[hub]'") from None
    return huggingface_hub


def resolve_hub_model(ref: str, *, cache_dir=None, local_files_only: bool = False) -> Path:
    """Local folder of the Hub model ``ref`` (downloaded into, or found in, the Hub cache)."""
    hub = _hub()
    from huggingface_hub import errors

    repo, rev = parse_hub_ref(ref)
    try:
        return Path(hub.snapshot_download(repo, revision=rev, cache_dir=cache_dir,
                                          local_files_only=local_files_only,
                                          allow_patterns=[*SHARED_FILES, CARD]))
    except errors.LocalEntryNotFoundError:
        raise TfmkitError(f"{ref} is not in the local Hugging Face cache and the Hub cannot be reached "
                          "(offline, HF_HUB_OFFLINE=1 or no network); download it once online, or pass a "
                          "local model directory") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as err:
        raise TfmkitError(f"{ref}: {type(err).__name__} on the Hub; check the name, the revision and "
                          "your access (huggingface-cli login for private models)") from None
    except errors.HfHubHTTPError as err:
        raise TfmkitError(f"{ref}: the Hub answered {str(err).splitlines()[0]}") from None


def _card_text(model_dir: Path) -> str:
    """The model card with the Hub's YAML metadata block in front."""
    import json

    meta = {}
    if (model_dir / "model_card.json").is_file():
        meta = json.loads((model_dir / "model_card.json").read_text())
    family = str((meta.get("model") or {}).get("family", "")) or "model"
    body = (model_dir / "MODEL_CARD.md").read_text() if (model_dir / "MODEL_CARD.md").is_file() \
        else f"# tfmkit {family}\n"
    tags = ["tfmkit", "single-cell", "transcriptomics", family]
    head = "---\nlibrary_name: tfmkit\ntags:\n" + "".join(f"- {t}\n" for t in tags) + "---\n\n"
    return head + body


def save_pretrained(model, out) -> Path:
    """Write the shareable files of ``model`` (a model directory, run directory or
    :class:`~tfmkit.bundle.TrainedModel`) into the new folder ``out`` and return it.

    ``out`` must not exist, or be empty; the files appear together (written into a hidden sibling
    and renamed), so a failure leaves nothing behind. ``tfmkit.load_model(out)`` loads it.
    """
    from tfmkit.bundle import TrainedModel
    from tfmkit.checkpoint import resolve_model_dir

    src = resolve_model_dir(model.source if isinstance(model, TrainedModel) else model)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TfmkitError(f"{out} exists and is not an empty folder; choose a new folder for save_pretrained")
    if not out.absolute().parent.is_dir():
        raise TfmkitError(f"the parent folder of {out} does not exist; create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-partial-", dir=out.absolute().parent))
    try:
        for name in SHARED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        (tmp / CARD).write_text(_card_text(src))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def push_to_hub(model, repo_id: str, *, private: bool = True, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload tfmkit model") -> str:
    """Upload ``model``'s shareable files (:func:`save_pretrained`) to the Hub repository
    ``repo_id`` (created if needed, private by default); returns the commit URL."""
    hub = _hub()
    repo, _ = parse_hub_ref(repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "model")
        try:
            api = hub.HfApi(token=token)
            api.create_repo(repo, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo, folder_path=str(folder), revision=revision,
                                     commit_message=commit_message)
        except Exception as err:  # HTTP, network (httpx) and file errors alike: one line, no traceback
            raise TfmkitError(f"upload to {repo} failed ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                              "check the network and your token (huggingface-cli login)") from None
    return str(getattr(info, "commit_url", info))


__all__ = ["HUB_PREFIX", "SHARED_FILES", "is_hub_ref", "parse_hub_ref", "push_to_hub",
           "resolve_hub_model", "save_pretrained"]
