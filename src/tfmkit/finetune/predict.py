"""``predict``: cell-type predictions of a fine-tuned classifier (issue 9 item 1).

Writes ``obs['tfmkit_pred']`` (predicted class), ``obs['tfmkit_pred_score']`` (its probability),
``obsm['tfmkit_pred_proba']`` (cells x classes; the column names are ``uns['tfmkit_pred_classes']``)
and provenance in ``uns['tfmkit']['tfmkit_pred']``. When the input has the training label column,
accuracy is computed on the cells whose label the model knows; labels absent from training cannot
be predicted: they are **reported** (stderr and ``unseen_labels`` in the provenance) and their
cells left out of that accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from tfmkit.errors import TfmkitError

PRED_KEY = "tfmkit_pred"


def load_classifier(model):
    """``(TrainedModel, CellTypeTask)`` of a model directory fine-tuned with ``celltype``."""
    from tfmkit import checkpoint as ckpt
    from tfmkit.finetune.run import load_parent
    from tfmkit.tasks import build_task

    bm = load_parent(model)
    if bm.run_config.train.task != "celltype":
        raise TfmkitError(f"{bm.source} was trained with task {bm.run_config.train.task!r}, not fine-tuned "
                          "for cell types; run `tfmkit finetune celltype` first and pass OUT/model")
    task = build_task(bm.run_config, bm.vocab.n_genes)
    try:
        task.load_state_dict(ckpt.read_checkpoint(bm.source)["criterion"])
    except RuntimeError as err:
        raise TfmkitError(f"{bm.source}: classifier head does not match its config "
                          f"({str(err).splitlines()[0]})") from None
    return bm, task.to(bm.device).eval()


@torch.no_grad()
def predict_proba(adata, model, *, n_views: int = 1, batch_size: int = 64, seed: int = 0,
                  layer: str | None = None, library_key: str | None = None,
                  allow_low_coverage: bool = False) -> tuple[np.ndarray, list[str]]:
    """``(probabilities (N, C), classes)`` of every cell, averaged over ``n_views`` reveals."""
    from tfmkit.finetune.run import target_corpus
    from tfmkit.inference import cell_batches

    bm, task = load_classifier(model) if not isinstance(model, tuple) else model
    corpus = target_corpus(adata, bm, layer=layer, library_key=library_key,
                           allow_low_coverage=allow_low_coverage)
    collate = task.inference_collator(corpus)
    bm.module.eval()
    proba = np.zeros((corpus.n_cells, len(task.classes)), dtype=np.float64)  # (N, C)
    for v in range(n_views):
        for idx, _, batch in cell_batches(corpus, collate, batch_size=batch_size, seed=seed, view=v,
                                      device=bm.device):  # per-cell reveal seeds, as tfmkit.embed
            logits = task.logits(bm.module.encode_cells(batch))  # (B, C)
            proba[idx] += torch.softmax(logits.float(), dim=-1).cpu().numpy() / n_views
    return proba.astype(np.float32), list(task.classes)


def predict(adata, model, *, n_views: int = 1, batch_size: int = 64, seed: int = 0,
            layer: str | None = None, library_key: str | None = None,
            allow_low_coverage: bool = False, copy: bool = False):
    """Predict the cell type of every cell of ``adata`` with a ``celltype`` fine-tuned model.

    Writes the keys of the module doc (nothing else changes) and returns the provenance dict
    (``accuracy`` on known labels when ``obs`` has the training label column, ``unseen_labels``),
    or the annotated copy when ``copy``.
    """
    import pandas as pd

    from tfmkit.finetune.run import report

    bm, task = load_classifier(model)
    adata = adata.copy() if copy else adata
    proba, classes = predict_proba(adata, (bm, task), n_views=n_views, batch_size=batch_size, seed=seed,
                                   layer=layer, library_key=library_key,
                                   allow_low_coverage=allow_low_coverage)
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    prov = {"model": bm.source, "parent": (bm.provenance.get("parent") or {}).get("model"),
            "label_key": task.label_key, "classes": classes, "n_views": n_views, "seed": seed,
            "tfmkit_version": __import__("tfmkit").__version__}
    if task.label_key in adata.obs:
        truth = adata.obs[task.label_key]
        known = truth.notna().to_numpy() & truth.astype(str).isin(classes).to_numpy()
        unseen = sorted(set(truth[truth.notna() & ~truth.astype(str).isin(classes)].astype(str)))
        if unseen:
            report(f"{int((~known & truth.notna().to_numpy()).sum())} cells have labels absent from training "
                   f"({', '.join(unseen)}); the model cannot predict them and they are left out of the accuracy")
        prov.update(unseen_labels=unseen, n_cells_scored=int(known.sum()),
                    accuracy=float((pred[known] == truth.astype(str).to_numpy()[known]).mean()) if known.any() else None)
    adata.obs[PRED_KEY] = pd.Categorical(pred, categories=classes)
    adata.obs[f"{PRED_KEY}_score"] = proba.max(1)
    adata.obsm[f"{PRED_KEY}_proba"] = proba
    adata.uns[f"{PRED_KEY}_classes"] = np.asarray(classes, dtype=object)
    tf = dict(adata.uns.get("tfmkit", {}))
    tf[PRED_KEY] = {k: v for k, v in prov.items() if v is not None}
    adata.uns["tfmkit"] = tf
    return adata if copy else prov
