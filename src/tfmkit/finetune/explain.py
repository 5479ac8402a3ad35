"""Gene attributions by integrated gradients (issue 9 item 5; BMFM's interpretability analysis).

For a cell ``x`` (the expression values of its revealed genes, as the model sees them), a scalar
score ``F`` and a baseline ``x'``, integrated gradients (Sundararajan et al. 2017, eq. 1)
attributes to revealed gene ``g``

    ``IG_g(x) = (x_g - x'_g) * int_0^1 dF(x' + a (x - x')) / dx_g da``,

approximated with Gauss-Legendre quadrature by Captum's :class:`captum.attr.IntegratedGradients`;
by completeness ``sum_g IG_g = F(x) - F(x')`` (the quadrature error is returned as ``delta``).
Baseline ``zero`` (default; the textbook choice): every revealed gene at value 0, no expression,
so only expressed genes get attributions (``x_g - x'_g = 0`` otherwise) and a class's top genes
are the expressed genes that raise its score. The revealed gene identities stay as they are (only
values are integrated), so for a model trained with expressed-only reveals
(``data.expressed_only``) the zero-valued path is off its training distribution and attributions
are less reliable (on a toy classifier its own markers came out negative). Baseline ``mean``: each
revealed gene at its mean log1p-normalised value over the explained cells ("average cell"): a
gene also scores for a class when its *absence* there moves the score.
Genes not revealed in a view get 0; attributions are averaged over ``n_views`` random reveals
(the model's own reveal rule and ``K``) and over the cells of each class.

The score ``F`` for class ``c``:

- a ``celltype`` fine-tune: the classifier's logit of ``c``;
- any other model (with ``label_key``): the projection of the cell embedding on the direction
  from the mean embedding of all cells to the mean embedding of the cells labelled ``c``.

Each cell is explained for its own class: its label when ``label_key`` (the classifier's label
column by default) is in ``obs``, else the classifier's prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfmkit.errors import TfmkitError


def _classes(adata, bm, task, label_key, n_cells_per_class, seed, only=None):
    """``(cell indices, class index per cell, class names)`` of the cells to explain."""
    key = label_key or (task.label_key if task is not None else None)
    if key is None:
        raise TfmkitError("this model is not a cell-type classifier: pass --label-key (the obs column whose "
                          "classes the cell embedding is explained for)")
    if key not in adata.obs:
        if task is None or label_key is not None:
            raise TfmkitError(f"obs has no label column {key!r}; pass --label-key")
        return None, None, list(task.classes)
    values = adata.obs[key]
    known = values.notna().to_numpy()
    names = list(task.classes) if task is not None else sorted(set(values[known].astype(str)))
    lab = values.astype(str).to_numpy()
    code = pd.Index(names).get_indexer(lab)
    code[~known] = -1
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise TfmkitError(f"class(es) {unknown[:5]} are not classes of obs[{key!r}] / the model; "
                              f"choose among {', '.join(names[:10])}")
    rng = np.random.default_rng(seed)
    cells = [rng.permutation(np.flatnonzero(code == c))[:n_cells_per_class]
             for c in range(len(names)) if only is None or names[c] in set(only)]
    cells = np.sort(np.concatenate(cells)) if cells else np.zeros(0, np.int64)
    if not len(cells):
        raise TfmkitError(f"no cell of obs[{key!r}] has a class of the model ({', '.join(names[:5])})")
    return cells, code[cells], names


def _directions(bm, store, cells, codes, n_classes, collate, batch_size, seed) -> torch.Tensor:
    """``(C, D)`` unit vectors from the mean embedding to each class mean embedding."""
    embs = []
    with torch.no_grad():
        for s in range(0, len(cells), batch_size):
            g = torch.Generator().manual_seed(seed + s)
            batch = {k: v.to(bm.device) for k, v in collate(store, cells[s:s + batch_size], g).items()}
            embs.append(bm.module.cell_embedding(batch).float().cpu())
    E = torch.cat(embs)  # (N, D)
    mu = E.mean(0)
    U = torch.stack([E[torch.as_tensor(codes == c)].mean(0) - mu for c in range(n_classes)])  # (C, D)
    return U / U.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _mean_values(store, cells, library_size: float) -> torch.Tensor:
    """``(G,)`` mean ``log1p(L * counts / library)`` of every vocabulary gene over ``cells``."""
    X = store.dense_counts(cells)  # (N, G)
    lib = store.library_sizes[cells][:, None]
    return torch.as_tensor(np.log1p(library_size * X / np.maximum(lib, 1e-12)).mean(0), dtype=torch.float32)


def explain(adata, model, *, label_key: str | None = None, n_cells_per_class: int = 64,
            n_views: int = 2, n_steps: int = 32, baseline: str = "zero", n_revealed: int | None = None,
            batch_size: int = 16, classes=None,
            seed: int = 0, layer: str | None = None, library_key: str | None = None,
            allow_low_coverage: bool = False) -> dict:
    """Integrated-gradients attribution of each gene to each class (see the module doc).

    ``classes``: explain only these classes (default all).
    ``baseline``: ``zero`` (no expression) or ``mean`` (the explained cells' mean value of each gene).
    Returns ``attributions`` (DataFrame genes x classes: mean IG over the class's cells and
    views; vocabulary genes the input measured), ``n_cells`` (per class), ``score`` (what was
    attributed), ``baseline``, ``delta`` (mean ``|sum IG - (F(x) - F(x'))|``) and ``mean_abs_score_change``.
    """
    from captum.attr import IntegratedGradients

    from tfmkit.data import keys as K
    from tfmkit.finetune.run import load_parent, target_corpus
    from tfmkit.tasks import build_task

    if baseline not in ("mean", "zero"):
        raise TfmkitError(f"baseline must be 'mean' or 'zero', not {baseline!r}")
    bm = load_parent(model)
    task = None
    if bm.run_config.train.task == "celltype":
        from tfmkit.finetune.predict import load_classifier

        bm, task = load_classifier(bm.source)
    cells, codes, names = _classes(adata, bm, task, label_key, n_cells_per_class, seed, classes)
    store = target_corpus(adata, bm, layer=layer, library_key=library_key, allow_low_coverage=allow_low_coverage)
    collate = (task or build_task(bm.run_config, bm.vocab.n_genes)).inference_collator(store, n_revealed)
    bm.module.eval()
    if cells is None:  # no labels: explain each cell's predicted class
        from tfmkit.finetune.predict import predict_proba

        cells = np.arange(store.n_cells)
        codes = predict_proba(adata, (bm, task), layer=layer, library_key=library_key,
                              allow_low_coverage=allow_low_coverage)[0].argmax(1)
    U = (None if task is not None else
         _directions(bm, store, cells, codes, len(names), collate, batch_size, seed).to(bm.device))  # (C, D)
    keys: list[str] = []

    def forward(values, *rest):
        batch = dict(zip(keys, rest))
        batch[K.VALUES] = values
        if task is not None:
            return task.logits(bm.module.encode_cells(batch))  # (N, C)
        return bm.module.cell_embedding(batch).float() @ U.T  # (N, C)

    ig = IntegratedGradients(forward)
    mean_values = torch.cat([torch.zeros(4), _mean_values(store, cells, float(bm.run_config.data.library_size))
                             if baseline == "mean" else torch.zeros(bm.vocab.n_genes)]).to(bm.device)  # (4 + G,)
    G = bm.vocab.n_genes
    total = np.zeros((len(names), G))  # (C, G)
    deltas, changes = [], []
    for view in range(n_views):
        for s in range(0, len(cells), batch_size):
            idx, tgt = cells[s:s + batch_size], codes[s:s + batch_size]
            g = torch.Generator().manual_seed(int(seed) * 7919 + view * 1_000_003 + s)
            batch = {k: v.to(bm.device) for k, v in collate(store, idx, g).items()}
            keys = [k for k, v in batch.items() if k != K.VALUES and v.dim() >= 1 and v.shape[0] == len(idx)]
            values = batch[K.VALUES].float()  # (B, T)
            base = mean_values[batch[K.GENE_IDS]]  # (B, T); 0 for PAD / special tokens
            attr, delta = ig.attribute(values, baselines=base,
                                       target=torch.as_tensor(tgt, device=bm.device),
                                       additional_forward_args=tuple(batch[k] for k in keys), n_steps=n_steps,
                                       internal_batch_size=max(batch_size * 4, 1),
                                       return_convergence_delta=True)  # (B, T), (B,)
            with torch.no_grad():
                col = torch.as_tensor(tgt, device=bm.device)[:, None]  # (B, 1)
                f = forward(values, *[batch[k] for k in keys]).gather(1, col)  # (B, 1)
                f0 = forward(base, *[batch[k] for k in keys]).gather(1, col)  # (B, 1)
            changes.append((f - f0).abs().squeeze(1).cpu().numpy())
            deltas.append(delta.abs().detach().cpu().numpy())
            gene = (batch[K.GENE_IDS] - 4).cpu().numpy()  # (B, T) vocabulary gene index (<0: special/pad)
            a = attr.detach().cpu().numpy()
            for r in range(len(idx)):
                ok = gene[r] >= 0
                np.add.at(total[tgt[r]], gene[r][ok], a[r][ok])
    n = np.bincount(codes, minlength=len(names)).astype(np.float64)
    mean = total / np.maximum(n, 1)[:, None] / n_views  # (C, G)
    genes = store.observable[0]
    df = pd.DataFrame(mean[:, genes].T, index=pd.Index(np.asarray(bm.vocab.genes)[genes], name="gene"),
                      columns=names)
    return {"attributions": df.loc[:, n > 0], "n_cells": dict(zip(names, n.astype(int).tolist())),
            "score": "class logit" if task is not None else "embedding projection on the class direction",
            "baseline": baseline, "delta": float(np.concatenate(deltas).mean()),
            "mean_abs_score_change": float(np.concatenate(changes).mean())}


def top_genes(attributions: pd.DataFrame, n_top: int = 20) -> pd.DataFrame:
    """Long table ``class, rank, gene, attribution``: the ``n_top`` genes of largest mean
    attribution (most in favour of the class) per class."""
    rows = []
    for c in attributions.columns:
        col = attributions[c].sort_values(ascending=False, kind="stable")
        rows += [{"class": c, "rank": r + 1, "gene": g, "attribution": float(v)}
                 for r, (g, v) in enumerate(col.iloc[:n_top].items())]
    return pd.DataFrame(rows, columns=["class", "rank", "gene", "attribution"])


def plot_top_genes(top: pd.DataFrame, path, n_show: int = 10) -> None:
    """One horizontal bar panel per class with its ``n_show`` top genes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(top["class"]))
    ncol = min(4, len(classes))
    nrow = int(np.ceil(len(classes) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 0.28 * n_show * nrow + 1.2 * nrow), squeeze=False)
    for ax, c in zip(axes.ravel(), classes):
        t = top[top["class"] == c].head(n_show).iloc[::-1]
        ax.barh(t["gene"].astype(str), t["attribution"], color="tab:blue")
        ax.set_title(str(c), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    fig.suptitle("Integrated-gradients top genes per class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
