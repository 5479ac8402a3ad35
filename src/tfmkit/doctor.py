"""``tfmkit doctor``: report versions, compute device and bundled data health."""

from __future__ import annotations

import importlib
import platform


_DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "scib_metrics": "scib-metrics"}


def _version(mod: str) -> str:
    """Installed version of the distribution providing ``mod`` (imports it to prove it loads)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        importlib.import_module(mod)
    except Exception as err:  # noqa: BLE001 - we report any import failure
        return f"MISSING ({type(err).__name__})"
    try:
        return version(_DISTRIBUTIONS.get(mod, mod))
    except PackageNotFoundError:
        return "installed"


def run_doctor(print_fn=None) -> bool:
    """Print a health table; return ``False`` if something required is missing or broken."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="tfmkit doctor")
    table.add_column("check")
    table.add_column("status")
    ok = True
    table.add_row("python", platform.python_version())
    for mod in ("tfmkit", "torch", "numpy", "scipy", "anndata", "scanpy", "sklearn", "safetensors",
                "scib_metrics", "typer", "rich", "yaml", "matplotlib"):
        v = _version(mod)
        ok &= not v.startswith("MISSING")
        table.add_row(mod, v)
    import torch

    from tfmkit.training import resolve_device

    dev = resolve_device("auto")
    table.add_row("device", f"{dev} (cuda available: {torch.cuda.is_available()})")
    table.add_row("precision", "bf16 autocast" if dev.type == "cuda" else "fp32 (CPU)")
    table.add_row("torch threads", str(torch.get_num_threads()))
    try:
        from tfmkit.datasets import DATASETS

        for name, entry in DATASETS.items():
            try:
                a = entry["loader"]() if isinstance(entry, dict) else entry[0]()
                table.add_row(f"data: {name}", f"ok {a.n_obs} cells x {a.n_vars} genes")
            except Exception as err:  # noqa: BLE001
                ok = False
                table.add_row(f"data: {name}", f"BROKEN: {err}")
    except Exception as err:  # noqa: BLE001
        ok = False
        table.add_row("bundled data", f"BROKEN: {err}")
    console.print(table)
    console.print("[green]all good[/green]" if ok else "[red]problems found (see above)[/red]")
    return ok
