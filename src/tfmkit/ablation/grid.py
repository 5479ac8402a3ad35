"""Ablation grids (TxFM §5.2, Table 5): parse a grid YAML and build each cell's run config.

A grid YAML (``configs/ablations/*.yaml``)::

    base: txfm_tiny                     # run config every cell starts from
    overrides: [train.steps=300]        # shared budget, applied to every cell
    seeds: [0, 1]                       # each cell is trained once per seed (train.seed)
    default: {name: default, overrides: []}
    groups:                             # one Table-5 sub-table per group
      loss:
        - {name: Poisson, default: true}            # the default row of this sub-table
        - {name: MSE, overrides: [train.objective=mse]}
    evaluation: {...}                   # optional, see EVAL_DEFAULTS
    gene_tables: {corpus_svd64: {n_components: 64}}  # optional, see run.corpus_gene_table

``"{gene_tables}"`` in an override is replaced by the folder where the grid's ``gene_tables``
were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tfmkit.errors import TfmkitError

ABLATION_DIR = Path(__file__).resolve().parents[1] / "configs" / "ablations"
EVAL_DEFAULTS = {
    "celltype": ["pbmc68k", "wu2020"],
    "pretraining": {"dataset": "wu2020", "mask_rates": [0.9],
                    "metrics": ["poisson_loss", "spearman_masked", "binary_correctness_masked"]},
    "gene_recall": {"databases": ["corum", "hallmark"], "n_null_draws": 3, "n_null_pairs": 100_000},
}


@dataclass
class Cell:
    """One trained configuration (``name`` is its identity and folder)."""

    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class Grid:
    """A parsed ablation grid (see module doc)."""

    base: str
    overrides: list[str]
    default: Cell
    groups: dict[str, list[tuple[str, Cell]]]  # group -> [(row label, cell)]
    seeds: list[int]
    evaluation: dict
    gene_tables: dict
    source: str = ""

    def select(self, groups=None, max_cells: int | None = None, cells=None) -> "Grid":
        """A reduced grid: only ``groups`` (names), only ``cells`` (names), and at most
        ``max_cells`` non-default cells (in grid order); the default is always kept."""
        keep = dict(self.groups)
        if groups:
            bad = sorted(set(groups) - set(keep))
            if bad:
                raise TfmkitError(f"unknown ablation group(s) {bad}; the grid has {sorted(keep)}")
            keep = {g: keep[g] for g in keep if g in set(groups)}
        if cells:
            names = {c.name for rows in keep.values() for _, c in rows}
            bad = sorted(set(cells) - names - {self.default.name})
            if bad:
                raise TfmkitError(f"unknown cell(s) {bad}; the selected groups have {sorted(names)}")
            keep = {g: [(lab, c) for lab, c in rows if c.name in set(cells) or c.name == self.default.name]
                    for g, rows in keep.items()}
            keep = {g: rows for g, rows in keep.items() if any(c.name != self.default.name for _, c in rows)}
        if max_cells is not None:
            seen: list[str] = []
            out = {}
            for g, rows in keep.items():
                sel = []
                for label, cell in rows:
                    if cell.name != self.default.name and cell.name not in seen:
                        if len(seen) >= max_cells:
                            continue
                        seen.append(cell.name)
                    sel.append((label, cell))
                if any(c.name != self.default.name for _, c in sel):
                    out[g] = sel
            keep = out
        return Grid(self.base, self.overrides, self.default, keep, self.seeds, self.evaluation,
                    self.gene_tables, self.source)

    def cells(self) -> list[Cell]:
        """Distinct cells to train, default first."""
        out = {self.default.name: self.default}
        for rows in self.groups.values():
            for _, c in rows:
                out.setdefault(c.name, c)
        return list(out.values())


def _overrides(x, where: str) -> list[str]:
    if x is None:
        return []
    if not isinstance(x, list) or not all(isinstance(o, str) and "=" in o for o in x):
        raise TfmkitError(f"{where}: overrides must be a list of 'section.key=value' strings")
    return list(x)


def load_grid(name_or_path) -> Grid:
    """Parse a grid YAML (path, or a shipped name: ``txfm_table5``, ``encodings``, ``smoke``)."""
    p = Path(name_or_path)
    if not p.is_file():
        p = ABLATION_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        shipped = sorted(x.stem for x in ABLATION_DIR.glob("*.yaml"))
        raise TfmkitError(f"ablation grid {str(name_or_path)!r} not found; give a YAML path or "
                          f"one of {shipped}")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise TfmkitError(f"cannot parse grid {p}: {str(err).splitlines()[0]}") from None
    if not isinstance(d, dict) or not isinstance(d.get("groups"), dict) or not d["groups"]:
        raise TfmkitError(f"grid {p} needs a 'groups' mapping (group -> list of cells)")
    unknown = set(d) - {"base", "overrides", "default", "groups", "seeds", "evaluation",
                        "gene_tables", "description"}
    if unknown:
        raise TfmkitError(f"grid {p}: unknown key(s) {sorted(unknown)}")
    dd = d.get("default") or {}
    default = Cell(str(dd.get("name", "default")), _overrides(dd.get("overrides"), "default"))
    groups: dict[str, list[tuple[str, Cell]]] = {}
    cells = {default.name: default}
    for g, rows in d["groups"].items():
        if not isinstance(rows, list) or not rows:
            raise TfmkitError(f"grid {p}: group {g!r} must be a non-empty list of cells")
        out = []
        for r in rows:
            if not isinstance(r, dict) or "name" not in r:
                raise TfmkitError(f"grid {p}: every cell of group {g!r} needs a 'name'")
            label = str(r["name"])
            if r.get("default") or label == default.name:
                out.append((label, default))
                continue
            cell = Cell(label, _overrides(r.get("overrides"), f"cell {label}"))
            if label in cells and cells[label].overrides != cell.overrides:
                raise TfmkitError(f"grid {p}: cell name {label!r} is used with different overrides")
            cells[label] = cell
            out.append((label, cell))
        groups[str(g)] = out
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise TfmkitError(f"grid {p}: seeds must be a non-empty list of integers")
    ev = {**EVAL_DEFAULTS, **(d.get("evaluation") or {})}
    return Grid(str(d.get("base", "txfm_tiny")), _overrides(d.get("overrides"), "overrides"),
                default, groups, seeds, ev, dict(d.get("gene_tables") or {}), str(p))


def slug(name: str) -> str:
    """A folder-safe version of a cell name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "cell"


def cell_config(grid: Grid, cell: Cell, seed: int, extra: list[str] = (), tables_dir=None):
    """The :class:`~tfmkit.config.RunConfig` of one cell and seed: base, shared overrides,
    cell overrides, ``train.seed``, then ``extra`` (e.g. ``train.steps=N``)."""
    from tfmkit.config import load_config

    ov = list(grid.overrides) + list(cell.overrides) + [f"train.seed={seed}"] + list(extra)
    if tables_dir is not None:
        ov = [o.replace("{gene_tables}", str(Path(tables_dir).resolve())) for o in ov]
    return load_config(grid.base, ov)
