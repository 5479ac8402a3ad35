"""Model cards and training-cell fingerprints (issue 11 Part B items 1 and 4).

Every model directory gets ``model_card.json`` (machine-readable) and ``MODEL_CARD.md`` (the
same facts for people): family/preset, parameters, training data (dataset names, cells, genes,
a SHA-256 of each input file), vocabulary, preprocessing, objective, steps, wall time, cells/s,
peak memory, device, seed, versions, parent model for fine-tunes, benchmark rows when benchmarks
were run on it, and known limitations. ``train_cells.npy`` holds a 64-bit fingerprint of every
training cell's counts (vocabulary-aligned), so ``benchmark ... --model`` can warn when evaluation
cells were seen in pretraining (:func:`leakage`).

The directory keeps the Hugging Face layout (``config.json`` + ``model.safetensors``); the card is
written with the checkpoint, atomically (:func:`tfmkit.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
FINGERPRINTS = "train_cells.npy"
MAX_HASH_BYTES = 2 * 2**30  # larger input files are not hashed (tens of seconds per 10 GB)
LIMITATIONS = [
    "Small CPU presets trained for minutes are far from the papers' models; compare with the "
    "baselines (PCA, HVG, lognorm) before trusting an embedding.",
    "Genes outside the vocabulary are ignored at inference; low coverage of the vocabulary "
    "(another species, Ensembl ids without symbols) degrades embeddings.",
    "The model saw only the training datasets listed here: other tissues, assays and species are "
    "out of distribution.",
]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cell_fingerprints(store) -> np.ndarray:
    """``(n_cells,)`` uint64: BLAKE2b-64 of each cell's vocabulary-aligned sparse counts.

    Two cells get the same fingerprint when they have the same counts at the same vocabulary
    genes, whatever their file, name or row order.
    """
    out = np.empty(store.n_cells, dtype=np.uint64)
    pos = 0
    for X in _csr_blocks(store):  # CSR (n, G) blocks in global cell order, sorted indices
        for r in range(X.shape[0]):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            h = hashlib.blake2b(X.indices[lo:hi].astype(np.int64).tobytes(), digest_size=8)
            h.update(X.data[lo:hi].astype(np.float32).tobytes())
            out[pos] = int.from_bytes(h.digest(), "little")
            pos += 1
    return out


def _csr_blocks(store):
    """Vocabulary-aligned CSR blocks of every dataset in order: the in-memory ``counts`` or a
    streamed store's ``iter_csr`` (one sequential pass)."""
    if hasattr(store, "counts"):
        yield from store.counts
        return
    for d in range(len(store.names)):
        for _, block in store.iter_csr(d):
            yield block


def leakage(model_dir: str | Path, store) -> tuple[int, int]:
    """``(n_seen, n_cells)``: cells of ``store`` whose counts match a training cell of the model.

    ``(0, n_cells)`` when the model directory has no fingerprints (older models).
    """
    path = Path(model_dir) / FINGERPRINTS
    if not path.is_file():
        return 0, store.n_cells
    seen = np.load(path, allow_pickle=False)
    return int(np.isin(cell_fingerprints(store), seen).sum()), store.n_cells


def data_sources(cfg) -> list[dict]:
    """Training inputs of a run config: ``{name, path, sha256}`` per file or bundled archive."""
    if cfg.data.paths:
        from tfmkit.data.sources import resolve_paths, store_kind

        out = []
        for p in cfg.data.paths:
            if store_kind(p) is not None:  # a prepared store or a SOMA experiment: a folder
                out.append({"name": Path(p).name, "path": str(p), "sha256": None})
            else:
                out += [{"name": name, "path": str(f),
                         "sha256": file_sha256(f) if f.stat().st_size <= MAX_HASH_BYTES else None}
                        for name, f in resolve_paths([p])]
        return out
    from importlib import resources

    files = {"balf": "liao2020_balf.npz", "wu2020": "wu2020.npz", "pbmc68k": "pbmc68k.npz"}
    out = []
    for name in cfg.data.datasets:
        ref = resources.files("tfmkit.datasets").joinpath("files", files.get(name, f"{name}.npz"))
        with resources.as_file(ref) as p:
            sha = file_sha256(p) if Path(p).is_file() else None
        out.append({"name": name, "path": f"bundled:{name}" + (" (QC-passing cells)" if cfg.data.qc else ""),
                    "sha256": sha})
    return out


def _versions() -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("tfmkit", "torch", "numpy", "anndata", "scanpy"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    return v


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``: KiB on Linux, B on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def build_card(cfg, *, module, vocab, store, sources: list[dict], steps: int, wall_s: float,
               cells_per_s: float | None, device: str, parent: dict | None = None) -> dict:
    """The card of a model trained with run config ``cfg`` on ``store`` (see the module doc)."""
    m = cfg.model
    return {
        "model": {"family": m.family, "preset": m.preset,
                  "parameters": int(sum(p.numel() for p in module.parameters())),
                  "embedding_dim": int(module.embedding_dim)},
        "training_data": {
            "datasets": [{**src, "n_cells": int((store.dataset_of_cell == d).sum()),
                          "n_genes_observable": int(len(store.observable[d]))}
                         for d, src in enumerate(_align(sources, store.names))],
            "n_cells": int(store.n_cells),
        },
        "vocabulary": {"n_genes": int(vocab.n_genes), "namespace": "HGNC symbols"},
        "preprocessing": {"library_size": cfg.data.library_size, "transform": "log1p(L * counts / total)",
                          "n_revealed": cfg.data.n_revealed, "tau": cfg.data.tau,
                          "expressed_only": cfg.data.expressed_only, "min_cells": cfg.data.min_cells},
        "objective": {"task": cfg.train.task, "objective": cfg.train.objective,
                      "options": dict(cfg.train.objective_kwargs)},
        "training": {"steps": int(steps), "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
                     "seed": cfg.train.seed, "wall_s": round(float(wall_s), 1),
                     "cells_per_s": None if cells_per_s is None else round(float(cells_per_s), 1),
                     "peak_rss_mb": round(peak_rss_mb(), 1), "device": device},
        "versions": _versions(),
        "parent": parent,
        "benchmarks": [],
        "limitations": LIMITATIONS,
    }


def _align(sources: list[dict], names: list[str]) -> list[dict]:
    """One source per store dataset (a bundled source may expand to several, e.g. patients)."""
    by_name = {s["name"]: s for s in sources}
    out = []
    for n in names:
        src = by_name.get(n) or next((s for s in sources if n.startswith(s["name"])), None)
        out.append({**(src or {"path": None, "sha256": None}), "name": n})
    return out


def render_markdown(card: dict) -> str:
    """``MODEL_CARD.md`` text of a card dict."""
    m, t, p = card["model"], card["training"], card["preprocessing"]
    lines = [f"# Model card: {m['family']}/{m['preset']}", "",
             f"- Parameters: {m['parameters']:,}; cell embedding width {m['embedding_dim']}",
             f"- Objective: `{card['objective']['objective']}` (task `{card['objective']['task']}`)",
             f"- Training: {t['steps']} steps x {t['batch_size']} cells, lr {t['lr']}, seed {t['seed']}, "
             f"{t['wall_s']} s on {t['device']}"
             + (f", {t['cells_per_s']} cells/s" if t["cells_per_s"] else "")
             + f", peak memory {t['peak_rss_mb']} MiB",
             f"- Vocabulary: {card['vocabulary']['n_genes']:,} genes ({card['vocabulary']['namespace']})",
             f"- Preprocessing: L = {p['library_size']:g}, {p['transform']}; K = {p['n_revealed']} "
             f"revealed genes per cell (tau {p['tau']}, expressed-only {p['expressed_only']})",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items() if v)]
    if card.get("parent"):
        lines.append(f"- Fine-tuned from: `{card['parent'].get('model')}` (task {card['parent'].get('task')})")
    lines += ["", "## Training data", "", "| dataset | cells | observable genes | source | SHA-256 |",
              "|---|---|---|---|---|"]
    for d in card["training_data"]["datasets"]:
        sha = (d.get("sha256") or "")[:16]
        lines.append(f"| {d['name']} | {d['n_cells']:,} | {d['n_genes_observable']:,} | {d.get('path')} | {sha} |")
    if card.get("benchmarks"):
        lines += ["", "## Benchmarks (model vs best baseline; 95% Welch t interval across seeds)", "",
                  "| benchmark | metric | model | best baseline | delta (+ = model better) |",
                  "|---|---|---|---|---|"]
        for r in card["benchmarks"]:
            ci = (f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r.get("ci_low") is not None else "")
            lines.append(f"| {r['benchmark']} | {r.get('embedding', '')} {r['metric']} | {r['model']:.3f} | "
                         f"{r['baseline']} {r['baseline_value']:.3f} | "
                         f"{r['delta']:+.3f}{ci} |")
    lines += ["", "## Known limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)


def card_files(card: dict, fingerprints: np.ndarray | None) -> dict[str, bytes]:
    """The files a checkpoint writes for a card: JSON, Markdown and the cell fingerprints."""
    import io

    files = {CARD_JSON: json.dumps(card, indent=2).encode(), CARD_MD: render_markdown(card).encode()}
    if fingerprints is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(fingerprints, dtype=np.uint64), allow_pickle=False)
        files[FINGERPRINTS] = buf.getvalue()
    return files


def read_card(model_dir: str | Path) -> dict | None:
    """The ``model_card.json`` of a model directory, or ``None``."""
    path = Path(model_dir) / CARD_JSON
    return json.loads(path.read_text()) if path.is_file() else None


class CardRecorder:
    """Collects what the card needs while the training loop runs (rank 0 only): the data
    sources and cell fingerprints once, then steps, wall time and cells/s at each checkpoint."""

    def __init__(self, cfg, corpus, model_dir: Path, resume: bool, device, in_memory: bool) -> None:
        self.cfg, self.corpus, self.device = cfg, corpus, str(device)
        prev = read_card(model_dir) if resume else None
        self.wall0 = float(prev["training"]["wall_s"]) if prev else 0.0
        self.sources = ([{"name": n, "path": "in-memory AnnData", "sha256": None} for n in corpus.names]
                        if in_memory else data_sources(cfg))
        self.fingerprints = (cell_fingerprints(corpus)
                             if hasattr(corpus, "counts") or hasattr(corpus, "iter_csr") else None)
        self.t0, self.cells = time.perf_counter(), 0

    def files(self, state) -> dict[str, bytes]:
        """Card files for the training state ``state`` (model, step, parent)."""
        wall = time.perf_counter() - self.t0
        card = build_card(
            self.cfg, module=state.model, vocab=self.corpus.vocab, store=self.corpus,
            sources=self.sources, steps=state.step, wall_s=self.wall0 + wall,
            cells_per_s=self.cells / wall if wall > 0 and self.cells else None, device=self.device,
            parent=state.parent)
        return card_files(card, self.fingerprints)


def check_leakage(model_dir, adata, *, layer: str | None = None, source: str | None = None,
                  file=None) -> tuple[int, int]:
    """Warn on stderr when cells of ``adata`` were in the model's pretraining data.

    Aligns ``adata`` to the model vocabulary and compares cell fingerprints with
    ``train_cells.npy`` (:func:`leakage`). Returns ``(n_seen, n_cells)``; ``(0, n)`` without
    fingerprints (models written before cards existed).
    """
    from tfmkit.checkpoint import resolve_model_dir
    from tfmkit.data.corpus import Corpus
    from tfmkit.data.vocab import GeneVocab

    d = resolve_model_dir(model_dir)
    if not (d / FINGERPRINTS).is_file():
        return 0, adata.n_obs
    store = Corpus.from_adata_for_inference(adata, GeneVocab.load(d / "vocab.json"), layer=layer,
                                            allow_low_coverage=True, name=source or "input")
    seen, n = leakage(d, store)
    if seen:
        print(f"warning: {seen} of {n} evaluation cells ({100 * seen / n:.1f}%) of "
              f"{source or 'the input'} were in the pretraining data of {d}; their scores are not "
              "held-out scores", file=sys.stderr if file is None else file)
    return seen, n


def record_benchmark(model_dir, benchmark: str, results, embeddings=None) -> list[dict]:
    """Add ``benchmark``'s headline rows (model − best baseline, :func:`baseline_deltas`) to the
    model's card (JSON and Markdown), replacing earlier rows of the same benchmark.

    ``embeddings`` restricts the model rows (e.g. the obsm keys made by this model). Returns the
    rows added (none when the directory has no card or no model row has a baseline).
    """
    from tfmkit.checkpoint import resolve_model_dir
    from tfmkit.evaluation.report import baseline_deltas

    d = resolve_model_dir(model_dir)
    card = read_card(d)
    if card is None:
        return []
    deltas = baseline_deltas(results)
    if embeddings is not None:
        deltas = deltas[deltas["embedding"].isin(list(embeddings))]
    rows = [{"benchmark": benchmark, "embedding": r.embedding, "metric": f"{r.task}/{r.metric}",
             "model": float(r.value), "baseline": r.baseline, "baseline_value": float(r.baseline_value),
             "delta": float(r.delta), "ci_low": None if not np.isfinite(r.ci_low) else float(r.ci_low),
             "ci_high": None if not np.isfinite(r.ci_high) else float(r.ci_high)}
            for r in deltas.itertuples()]
    card["benchmarks"] = [b for b in card.get("benchmarks", []) if b["benchmark"] != benchmark] + rows
    for name, content in card_files(card, None).items():
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, d / name)
    return rows
