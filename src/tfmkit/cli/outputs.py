"""Output paths of the commands: checked before any work starts, written atomically.

Rules (SPEC, issue 11 item 8): nothing the user had is overwritten without ``--overwrite``; a
mistake in an output path is reported before minutes of computing; a failed command leaves no
partial file and no directory it created.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from tfmkit.errors import TfmkitError


def check_output_file(path, *, overwrite: bool, suffix: str = ".h5ad", option: str = "--output") -> Path:
    """Validate a file to be written: right ``suffix``, existing parent directory, not a
    directory, and absent unless ``overwrite``. Returns it as a :class:`Path`; writes nothing."""
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise TfmkitError(f"{option} {p} must end in {suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise TfmkitError(f"the directory {parent} of {option} {p} does not exist; create it first "
                          "or choose another path")
    if p.is_dir():
        raise TfmkitError(f"{option} {p} is a directory; give a file name ending in {suffix}")
    if p.exists() and not overwrite:
        raise TfmkitError(f"{p} exists; pass --overwrite or choose another {option}")
    if not os.access(parent, os.W_OK):
        raise TfmkitError(f"cannot write to {parent} ({option} {p}); choose a writable directory")
    return p


def write_h5ad_atomic(adata, path) -> None:
    """Write ``adata`` to ``path`` through a temporary file in the same directory swapped in with
    :func:`os.replace`: a failure or a kill leaves either the previous file or none, never half
    a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def results_dir(out, *, overwrite: bool):
    """Check ``--out`` of a benchmark before any work (refuses existing results unless
    ``overwrite``, via :func:`tfmkit.evaluation.report.result_paths`) and yield it as a
    :class:`Path`. If the command fails, directories this check created are removed again when
    they are still empty, so a failed benchmark leaves nothing behind."""
    from tfmkit.evaluation.report import result_paths

    out = Path(out)
    created = []
    p = out.absolute()
    while not p.exists():
        created.append(p)
        p = p.parent
    result_paths(out, overwrite=overwrite)
    try:
        yield out
    except BaseException:
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()  # only succeeds while empty: never removes anything written
        raise
