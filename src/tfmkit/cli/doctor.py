"""``tfmkit doctor``: environment check (logic in :func:`tfmkit.doctor.run_doctor`)."""

from __future__ import annotations

import typer


def doctor() -> None:
    """Check the environment: versions, device, bundled data files (exit 1 if something is broken)."""
    from tfmkit.doctor import run_doctor

    ok = run_doctor()
    raise typer.Exit(code=0 if ok else 1)
