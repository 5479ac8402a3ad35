"""Preflight check of an input file (``tfmkit doctor --input X.h5ad [--model DIR]``).

:func:`inspect_input` looks at an AnnData (or ``.h5ad`` / 10x ``.h5`` file) the way tfmkit will
use it and returns a :class:`PreflightReport`; :func:`format_report` renders it as plain text.
It answers, before any model runs:

- **where the raw counts are**: ``X``, each layer and ``.raw`` are classified as ``counts``
  (finite, non-negative, integer), ``normalised`` (non-integer, rows sum to one constant),
  ``log1p`` (``expm1`` of the rows sums to one constant, or non-integer with max ≤
  :data:`LOG_MAX`), ``scaled`` (negative values: centred / z-scored), ``normalised`` otherwise
  (non-integer, non-negative: TPM, corrected values), ``invalid`` (NaN/inf), ``empty`` (all
  zero). Judged on the first :data:`~tfmkit.data.validate.SAMPLE_ROWS` cells (fast);
- **gene namespace**: HGNC symbols, Ensembl ids (± version suffixes), mouse-style casing,
  other species' Ensembl ids, numeric ids (:mod:`tfmkit.data.coverage`), how many names map
  to HGNC, duplicate names and HGNC collisions (``SEPT7`` + ``SEPTIN7``);
- **all-zero cells and genes** of the counts tfmkit would use;
- **vocabulary coverage** against a model vocabulary (thresholds of
  :func:`tfmkit.data.coverage.check_coverage`);
- **memory**: the file's matrices in memory plus the two sparse float32 copies of the counts
  tfmkit makes (harmonised subset, vocabulary-aligned CSR).

``ok`` is ``True`` only when the file can be used **as is**; ``flags`` holds the exact flags
that make it usable (e.g. ``["--layer counts"]``), ``problems`` what blocks it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from tfmkit.data import coverage as cov
from tfmkit.data.validate import INTEGER_TOLERANCE, SAMPLE_ROWS

LOG_MAX = 30.0  # non-integer values never above this are taken as log-scale (log1p(1e6) ≈ 13.8)
CONSTANT_CV = 1e-3  # row sums with a coefficient of variation below this are "constant"


@dataclasses.dataclass
class MatrixInfo:
    """One candidate count matrix: ``where`` (``"X"``, ``"layers['counts']"``,
    ``"adata.raw"``), ``layer`` (the ``--layer`` value; ``None`` for X), ``kind`` (module doc),
    ``n_genes`` and a short ``detail``."""

    where: str
    layer: str | None
    kind: str
    n_genes: int
    detail: str


@dataclasses.dataclass
class PreflightReport:
    """Result of :func:`inspect_input` (see the module doc for each part)."""

    source: str
    n_cells: int
    n_genes: int
    matrices: list
    counts_layer: str | None  # the --layer holding raw counts; None = X (or none found)
    counts_found: bool
    namespace: dict
    namespace_summary: str
    likely_species: str
    n_hgnc_mapped: int
    n_duplicate_names: int
    n_hgnc_collisions: int
    duplicate_examples: list
    n_zero_cells: int
    n_zero_genes: int
    coverage: cov.CoverageReport | None
    memory_bytes: int
    problems: list
    warnings: list
    flags: list

    @property
    def ok(self) -> bool:
        """Whether the file can be used as is (no problems and no flag needed)."""
        return not self.problems and not self.flags


def _sample(X):
    if sp.issparse(X) and X.format not in ("csr", "csc"):
        X = X.tocsr()
    return X[: min(SAMPLE_ROWS, X.shape[0])]


def classify_matrix(X) -> tuple[str, str]:
    """``(kind, detail)`` of a ``(cells, genes)`` matrix (kinds in the module doc), judged on
    its first :data:`~tfmkit.data.validate.SAMPLE_ROWS` rows."""
    S = _sample(X)
    data = np.asarray(S.data if sp.issparse(S) else S).ravel()
    if data.dtype.kind not in "biuf":
        return "non-numeric", f"dtype {data.dtype}"
    data = data.astype(np.float64, copy=False)
    if not np.isfinite(data).all():
        return "invalid", "contains NaN or inf"
    if not data.size or not np.any(data):
        return "empty", "all zeros"
    if data.min() < 0:
        return "scaled", f"negative values (min {data.min():.3g}): centred or z-scored"
    vmax = float(data.max())
    if np.abs(data - np.rint(data)).max() <= INTEGER_TOLERANCE:
        return "counts", f"integer, max {vmax:,.0f}"
    rows = np.asarray(S.sum(axis=1)).ravel()
    if _constant(rows):
        return "normalised", f"non-integer, every cell sums to {np.median(rows):,.4g}"
    E = S.expm1() if sp.issparse(S) else np.expm1(np.asarray(S, dtype=np.float64))
    totals = np.asarray(E.sum(axis=1)).ravel()
    if vmax <= LOG_MAX and _constant(totals):
        return "log1p", f"log-normalised: expm1 of every cell sums to {np.median(totals):,.4g}"
    if vmax <= LOG_MAX:
        return "log1p", f"non-integer, max {vmax:.3g}: log-transformed"
    return "normalised", f"non-integer, max {vmax:,.4g} (TPM-like or corrected values)"


def _constant(rows: np.ndarray) -> bool:
    rows = rows[rows > 0]
    return bool(len(rows) >= 2 and rows.std() <= CONSTANT_CV * rows.mean())


def _matrices(adata) -> list[MatrixInfo]:
    found = [("X", None, adata.X, adata.n_vars)]
    found += [(f"layers[{k!r}]", k, adata.layers[k], adata.n_vars) for k in adata.layers.keys()]
    if adata.raw is not None:
        found.append(("adata.raw", "raw", adata.raw.X, adata.raw.n_vars))
    out = []
    for where, layer, X, n_genes in found:
        kind, detail = classify_matrix(X)
        out.append(MatrixInfo(where=where, layer=layer, kind=kind, n_genes=int(n_genes), detail=detail))
    return out


def _nbytes(X) -> int:
    if X is None:
        return 0
    if sp.issparse(X):
        return int(X.data.nbytes + X.indices.nbytes + getattr(X, "indptr", np.zeros(0)).nbytes)
    return int(getattr(X, "nbytes", 0))


def _zero_cells_genes(X) -> tuple[int, int]:
    if sp.issparse(X):
        X = X.tocsr(copy=True)
        X.eliminate_zeros()
        cells = np.diff(X.indptr) == 0
        genes = np.bincount(X.indices, minlength=X.shape[1]) == 0
    else:
        nz = np.asarray(X) != 0
        cells, genes = ~nz.any(axis=1), ~nz.any(axis=0)
    return int(cells.sum()), int(genes.sum())


def _load_vocab(model_vocab):
    from tfmkit.data.vocab import GeneVocab

    if model_vocab is None or isinstance(model_vocab, GeneVocab):
        return model_vocab
    if isinstance(model_vocab, (str, Path)):
        p = Path(model_vocab)
        return GeneVocab.load(p / "vocab.json" if p.is_dir() else p)
    return GeneVocab(list(model_vocab))


def _species(namespace: dict, names, hgnc_frac: float) -> str:
    other = cov.other_species(names)
    n = max(1, len(names))
    if other and max(other.values()) >= 0.3 * n:
        return max(other, key=other.get)
    if namespace.get("mouse_case", 0) >= 0.3 * n:
        return "mouse or rat (capitalised symbols)"
    if hgnc_frac >= 0.3 or namespace.get("ensembl_human", 0) + namespace.get("ensembl_version", 0) >= 0.3 * n:
        return "human"
    return "unknown"


def _namespace_summary(namespace: dict, ens_col: bool) -> str:
    labels = {"symbol": "symbols", "ensembl_version": "human Ensembl ids with version suffixes",
              "ensembl_human": "human Ensembl ids", "ensembl_other": "non-human Ensembl ids",
              "numeric": "numeric ids", "refseq": "RefSeq ids", "probe": "microarray probe ids",
              "mouse_case": "mouse-style symbols (Cd3e)", "lower_case": "lower-case symbols"}
    total = max(1, sum(namespace.values()))
    ranked = sorted(namespace.items(), key=lambda kv: -kv[1])
    parts = [f"{labels[k]} {100 * v / total:.0f}%" for k, v in ranked if v >= 0.01 * total]
    return ", ".join(parts) + ("; Ensembl ids also in var" if ens_col else "")


def inspect_input(path_or_adata, *, model_vocab=None, source: str | None = None) -> PreflightReport:
    """Inspect an input for use with tfmkit (module doc) without modifying it.

    Parameters
    ----------
    path_or_adata
        An AnnData, or a path to an ``.h5ad`` / 10x ``.h5`` file (read with
        :func:`tfmkit.data.io.read_input`).
    model_vocab
        Optional model vocabulary for the coverage check: a :class:`~tfmkit.data.vocab.GeneVocab`,
        a list of gene symbols, a model directory (its ``vocab.json``) or a ``vocab.json`` path.
    source
        Name used in messages (default: the file name, or ``"input"``).
    """
    if isinstance(path_or_adata, (str, Path)):
        from tfmkit.data.io import read_input

        adata = read_input(path_or_adata)
        source = source or Path(path_or_adata).name
    else:
        adata = path_or_adata
        source = source or "input"
    vocab = _load_vocab(model_vocab)
    matrices = _matrices(adata)
    chosen, problems, flags = _counts_verdict(matrices)
    gene_src = adata.raw if chosen is not None and chosen.layer == "raw" else adata
    genes = _gene_checks(gene_src, vocab, source)
    counts_X = None if chosen is None else (adata.raw.X if chosen.layer == "raw" else
                                            adata.layers[chosen.layer] if chosen.layer else adata.X)
    n_zero_cells, n_zero_genes = _zero_cells_genes(counts_X) if counts_X is not None else (0, 0)
    warns = genes.pop("warnings")
    if n_zero_cells:
        warns.append(f"{n_zero_cells} of {adata.n_obs} cells have no counts: their embeddings carry "
                     f"no information — drop them (e.g. scanpy.pp.filter_cells(adata, min_counts=1))")
    return PreflightReport(
        source=source, n_cells=int(adata.n_obs), n_genes=int(adata.n_vars), matrices=matrices,
        counts_layer=None if chosen is None else chosen.layer, counts_found=chosen is not None,
        n_zero_cells=n_zero_cells, n_zero_genes=n_zero_genes, memory_bytes=_memory(adata, counts_X),
        problems=problems + genes.pop("problems"), warnings=warns, flags=flags, **genes,
    )


def _counts_verdict(matrices: list[MatrixInfo]):
    """``(chosen matrix or None, problems, flags)``: X when it holds counts, else the first
    layer / ``.raw`` that does (with its ``--layer`` flag)."""
    counts = [m for m in matrices if m.kind == "counts"]
    chosen = next((m for m in counts if m.layer is None), None) or (counts[0] if counts else None)
    if chosen is None:
        kinds = ", ".join(f"{m.where} {m.kind}" for m in matrices)
        return None, [f"no raw counts in the file ({kinds}); tfmkit normalises counts itself — use a "
                      f"file with the raw counts (e.g. Cell Ranger's filtered_feature_bc_matrix.h5)"], []
    if chosen.layer is None:
        return chosen, [], []
    return chosen, [f"X holds {matrices[0].kind} values, not raw counts; the raw counts are in "
                    f"{chosen.where}"], [f"--layer {chosen.layer}"]


def _gene_checks(gene_src, vocab, source: str) -> dict:
    """Namespace, species, HGNC mapping, duplicates and coverage of ``gene_src.var`` (the
    AnnData or ``.raw`` whose genes go with the counts); PreflightReport fields plus
    ``problems`` and ``warnings``."""
    from tfmkit.data.hgnc import collision_keep_mask, ensembl_column, map_symbols

    names = gene_src.var_names.astype(str).to_numpy()
    ens = ensembl_column(gene_src.var)
    namespace = cov.namespace_counts(names)
    new, status = map_symbols(names, ens)
    n_hgnc = int((status != "unmapped").sum())
    keep = collision_keep_mask(new, status)
    dup_names = gene_src.var_names.duplicated()
    collisions = ~keep & ~np.isin(names, names[dup_names])
    problems, warns = [], []
    if dup_names.any() or collisions.any():
        warns.append(f"{int(dup_names.sum())} duplicate gene names and {int(collisions.sum())} genes whose "
                     f"HGNC symbol another column already has; tfmkit keeps one column per symbol (the "
                     f"one named by the approved symbol, else the first)")
    if vocab is not None:
        in_vocab = (vocab.gene_index(new.astype(str)) >= 0) & keep
        gc = cov.gene_coverage(names, int(in_vocab.sum()), vocab.n_genes, mapped=in_vocab, source=source)
        frac, refuse, warn = gc.frac_vocab, cov.REFUSE_VOCAB_FRACTION, cov.WARN_VOCAB_FRACTION
        what = "of the model vocabulary is in the input"
    else:  # no model: judge the HGNC mapping, as pre-training does
        gc = cov.gene_coverage(names, n_hgnc, None, mapped=status != "unmapped", source=source)
        frac, refuse, warn = gc.frac_input, cov.REFUSE_INPUT_FRACTION, cov.WARN_INPUT_FRACTION
        what = "of the genes map to human HGNC symbols"
    if frac < refuse:
        problems.append(f"only {100 * frac:.1f}% {what}; likely cause: "
                        f"{gc.likely_cause or 'gene names not recognised'} "
                        f"(--allow-low-coverage continues anyway)")
    elif frac < warn:
        warns.append(f"only {100 * frac:.1f}% {what}")
    return dict(
        namespace=namespace, namespace_summary=_namespace_summary(namespace, ens is not None),
        likely_species=_species(namespace, names, n_hgnc / max(1, len(names))),
        n_hgnc_mapped=n_hgnc, n_duplicate_names=int(dup_names.sum()),
        n_hgnc_collisions=int(collisions.sum()),
        duplicate_examples=[f"{o}->{n}" for o, n in zip(names[~keep][:5], new[~keep][:5])],
        coverage=gc if vocab is not None else None, problems=problems, warnings=warns,
    )


def _memory(adata, counts_X) -> int:
    """Bytes: the file's matrices in memory + 2 sparse float32 copies of the counts (value and
    index, 8 bytes per nonzero; nonzeros of a dense matrix estimated from the sampled rows)."""
    mem = sum(_nbytes(m) for m in [adata.X, *adata.layers.values(),
                                   adata.raw.X if adata.raw is not None else None])
    if counts_X is None:
        return int(mem)
    if sp.issparse(counts_X):
        nnz = counts_X.nnz
    else:
        S = _sample(counts_X)
        nnz = int(np.count_nonzero(S) * counts_X.shape[0] / max(1, S.shape[0]))
    return int(mem + 2 * (8 * nnz + 8 * (counts_X.shape[0] + 1)))


def format_report(report: PreflightReport) -> str:
    """Plain-text rendering of a :class:`PreflightReport` (one fact per line, verdict last)."""
    r = report
    lines = [f"{r.source}: {r.n_cells:,} cells x {r.n_genes:,} genes"]
    for m in r.matrices:
        mark = "raw counts" if m.kind == "counts" else "not raw counts"
        flag = "" if m.layer is None else f"  (--layer {m.layer})"
        lines.append(f"  {m.where:<22} {m.kind:<11} {m.detail}; {m.n_genes:,} genes -> {mark}{flag}")
    lines.append(f"  genes: {r.namespace_summary}; likely species: {r.likely_species}; "
                 f"{r.n_hgnc_mapped:,} of {sum(r.namespace.values()):,} map to HGNC symbols")
    if r.n_duplicate_names or r.n_hgnc_collisions:
        lines.append(f"  duplicates: {r.n_duplicate_names} repeated names, {r.n_hgnc_collisions} HGNC "
                     f"collisions (e.g. {', '.join(r.duplicate_examples[:3])})")
    lines.append(f"  all-zero cells: {r.n_zero_cells:,}; all-zero genes: {r.n_zero_genes:,}")
    if r.coverage is not None:
        lines.append(f"  model: {r.coverage.summary().split(': ', 1)[-1]}")
    lines.append(f"  memory: about {r.memory_bytes / 2**30:.2f} GiB to load and prepare "
                 f"(file matrices + 2 copies of the counts; model activations extra)")
    lines += [f"  warning: {w}" for w in r.warnings]
    lines += [f"  problem: {p}" for p in r.problems]
    if r.ok:
        lines.append("OK: usable as is.")
    elif r.counts_found and r.flags and len(r.problems) == 1:
        lines.append(f"NOT usable as is: pass {' '.join(r.flags)}")
    else:
        extra = f" (pass {' '.join(r.flags)} for the counts)" if r.flags else ""
        lines.append(f"NOT usable: {len(r.problems)} problem(s) above{extra}")
    return "\n".join(lines)
