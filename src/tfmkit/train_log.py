"""What the training loop reports: ``train_log.csv`` rows and the progress bar."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

LOG_FILE = "train_log.csv"
LOG_COLUMNS = ["step", "loss", "val_loss", "lr", "cells_per_s", "elapsed_s"]


class CsvLog:
    """``train_log.csv``: one row per logged step with throughput since the previous row."""

    def __init__(self, path: Path, append: bool) -> None:
        new = not (append and path.exists())
        self.fh = open(path, "w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=LOG_COLUMNS)
        if new:
            self.writer.writeheader()
        self.t0 = self.tick = time.perf_counter()
        self.cells = 0

    def record(self, step: int, loss: float, val: float | None, lr: float, cells: int,
               force: bool) -> None:
        self.cells += cells
        if not force:
            return
        now = time.perf_counter()
        self.writer.writerow({"step": step, "loss": f"{loss:.8g}",
                              "val_loss": "" if val is None else f"{val:.8g}", "lr": f"{lr:.6e}",
                              "cells_per_s": f"{self.cells / max(now - self.tick, 1e-9):.1f}",
                              "elapsed_s": f"{now - self.t0:.2f}"})
        self.fh.flush()
        self.cells, self.tick = 0, now

    def close(self) -> None:
        self.fh.close()


class ProgressBar:
    """A rich progress bar showing step and loss."""

    def __init__(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), transient=False)
        self.task = self.p.add_task("pretrain", total=total, completed=start, loss=float("nan"))
        self.p.start()

    def update(self, loss: float) -> None:
        self.p.update(self.task, advance=1, loss=loss)

    def close(self) -> None:
        self.p.stop()


def progress(enabled: bool, total: int, start: int):
    """A :class:`ProgressBar`, or ``None`` when disabled or ``TFMKIT_NO_PROGRESS`` is set."""
    return ProgressBar(total, start) if enabled and os.environ.get("TFMKIT_NO_PROGRESS") is None else None
