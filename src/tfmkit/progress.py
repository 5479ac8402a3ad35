"""One progress-bar helper (rich) for every long-running loop in tfmkit.

Set ``TFMKIT_NO_PROGRESS=1`` to silence bars (tests, batch jobs).
"""

from __future__ import annotations

import os


def progress_bar(enabled: bool, total: int, label: str):
    """A started, transient ``rich.progress.Progress`` with one task, or ``None`` when disabled.

    Advance with ``bar.advance(bar.task_ids[0])`` and finish with ``bar.stop()``.
    """
    if not enabled or os.environ.get("TFMKIT_NO_PROGRESS"):
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    p.add_task(label, total=total)
    p.start()
    return p
