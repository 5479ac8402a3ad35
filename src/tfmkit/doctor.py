"""``tfmkit doctor``: a fast environment check (versions, device, shipped data files).

It reads versions from package metadata, infers the compute device from the torch build and the
NVIDIA driver, and checks that the shipped files exist and open — without importing torch or
scanpy or loading the datasets, so it answers in well under 2 s. ``tfmkit doctor --input X.h5ad`` adds a preflight
of a user file (:mod:`tfmkit.preflight`).
"""

from __future__ import annotations

import platform
from importlib import metadata, util
from pathlib import Path

FILES_DIR = Path(__file__).parent / "datasets" / "files"

#: (import name, distribution) of the packages tfmkit needs.
REQUIRED = [("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"), ("pandas", "pandas"),
            ("anndata", "anndata"), ("scanpy", "scanpy"), ("sklearn", "scikit-learn"),
            ("h5py", "h5py"), ("safetensors", "safetensors"), ("scib_metrics", "scib-metrics"),
            ("leidenalg", "leidenalg"), ("igraph", "igraph"), ("typer", "typer"), ("rich", "rich"),
            ("yaml", "pyyaml"), ("matplotlib", "matplotlib")]
#: Optional extras: reported, never a failure.
OPTIONAL = [("scvi", "scvi-tools"), ("captum", "captum")]
#: Shipped data files (relative to tfmkit/datasets/files).
DATA_FILES = ["liao2020_balf.npz", "wu2020.npz", "pbmc68k.npz", "hgnc_compact.tsv.gz",
              "gene_sets/corum_complexes.csv", "gene_sets/h.all.v7.5.1.symbols.gmt",
              "gene_sets/c2.cp.v7.5.1.nokegg.symbols.gmt.gz"]


def package_status(module: str, dist: str) -> tuple[bool, str]:
    """``(found, version-or-reason)`` from the import spec and the distribution metadata."""
    if util.find_spec(module) is None:
        return False, "MISSING"
    try:
        return True, metadata.version(dist)
    except metadata.PackageNotFoundError:
        return True, "installed"


def torch_build() -> str:
    """``cpu`` or ``cuda`` build of the installed torch, from its metadata (no import)."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"
    if "+cpu" in version:
        return f"cpu ({version})"
    if "+cu" in version or util.find_spec("nvidia") is not None:
        return f"cuda ({version})"
    return f"cpu ({version})"


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version line, or ``None`` when no NVIDIA GPU driver is loaded."""
    path = Path("/proc/driver/nvidia/version")
    try:
        return path.read_text().splitlines()[0].strip() if path.is_file() else None
    except OSError:
        return None


def data_file_status(rel: str) -> tuple[bool, str]:
    """``(ok, detail)`` for one shipped file: it exists and its header reads."""
    import gzip
    import zipfile

    path = FILES_DIR.joinpath(*rel.split("/"))  # not importlib.resources: that imports anndata
    try:
        size = path.stat().st_size
        if rel.endswith(".npz"):
            with zipfile.ZipFile(path) as z:
                n = len(z.namelist())
            return True, f"ok ({size / 1e6:.1f} MB, {n} arrays)"
        opener = gzip.open if rel.endswith(".gz") else open
        with opener(path, "rt") as fh:
            fh.readline()
        return True, f"ok ({size / 1e6:.2f} MB)"
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return False, f"BROKEN: {err}"


def run_doctor() -> bool:
    """Print the health table; return ``False`` if something required is missing or broken."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tfmkit doctor")
    table.add_column("check")
    table.add_column("status")
    ok = True
    table.add_row("python", platform.python_version())
    table.add_row("tfmkit", __import__("tfmkit").__version__)
    for module, dist in REQUIRED:
        found, status = package_status(module, dist)
        ok &= found
        table.add_row(dist, status)
    for module, dist in OPTIONAL:
        table.add_row(f"{dist} (optional)", package_status(module, dist)[1])
    build, gpu = torch_build(), nvidia_driver()
    cuda = build.startswith("cuda") and gpu is not None
    table.add_row("torch build", build)
    table.add_row("NVIDIA driver", gpu or "none found")
    table.add_row("device (training default)", "cuda, bf16 autocast" if cuda else "cpu, fp32")
    for rel in DATA_FILES:
        good, detail = data_file_status(rel)
        ok &= good
        table.add_row(f"file: {rel}", detail)
    console = Console()
    console.print(table)
    console.print("[green]all good[/green]" if ok else "[red]problems found (see above)[/red]")
    return ok
