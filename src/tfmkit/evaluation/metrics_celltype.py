"""All cell-type / integration metrics of one embedding, from one distance pass (SPEC §6).

:func:`celltype_metrics` is a pure function over ``(X, labels, batches)`` that returns every
clustering and integration metric of TxFM §B.2 / the encodings paper §4.2:

========================  ==================  ==============================================
metric                    task                definition (module)
========================  ==================  ==============================================
``nmi``, ``ari``          clustering          Leiden sweep, max-NMI resolution (clustering)
``asw_label``             clustering          eq. 16, rescaled (integration)
``clisi``                 clustering          scaled cLISI, 90 neighbours (scib-metrics)
``isolated_label_f1``     clustering          scIB isolated-label F1 over the sweep
``isolated_label_asw``    clustering          scIB isolated-label silhouette
``asw_label_batch``       batch_integration   eq. 17 ``ASW_l/b`` (within-batch label ASW)
``asw_batch``             batch_integration   scIB batch ASW (``1 − |s_batch|`` in labels)
``ilisi``                 batch_integration   scaled iLISI, 90 neighbours (scib-metrics)
``graph_connectivity``    batch_integration   scIB, 15-NN graph (scib-metrics)
========================  ==================  ==============================================

Batch metrics and the isolated-label metrics need ≥ 2 batches and are left out otherwise.
:func:`batch_metrics` scores unlabelled data (batch-only mode): ``ilisi`` and ``asw_batch``
with all cells treated as one label.
:func:`subsample` draws the seeded 10,000-cell subsets (TxFM: 10 seeds -> mean ± std).
"""

from __future__ import annotations

import numpy as np

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import clustering as C
from tfmkit.evaluation import integration as I

CLUSTERING = "clustering"
BATCH_INTEGRATION = "batch_integration"
METRIC_TASKS = {
    "nmi": CLUSTERING, "ari": CLUSTERING, "asw_label": CLUSTERING, "clisi": CLUSTERING,
    "isolated_label_f1": CLUSTERING, "isolated_label_asw": CLUSTERING,
    "asw_label_batch": BATCH_INTEGRATION, "asw_batch": BATCH_INTEGRATION,
    "ilisi": BATCH_INTEGRATION, "graph_connectivity": BATCH_INTEGRATION,
}
N_NEIGHBORS = 15        # clustering / graph connectivity graph (scib-metrics Benchmarker)
N_LISI_NEIGHBORS = 90   # LISI neighbourhoods (scib-metrics Benchmarker)


def subsample(n_total: int, n_cells: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n_cells, n_total)`` cells drawn without replacement (seeded)."""
    if n_cells <= 0:
        raise TfmkitError(f"n_cells must be positive, got {n_cells}")
    if n_total <= n_cells:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n_cells, replace=False))


def celltype_metrics(X, labels, batches=None, *, seed: int = 0, resolutions=C.RESOLUTIONS,
                     n_neighbors: int = N_NEIGHBORS, n_lisi_neighbors: int = N_LISI_NEIGHBORS,
                     ) -> dict[str, float]:
    """Every clustering / integration metric of embedding ``X`` ``(N, D)`` (see module table).

    ``labels`` ``(N,)`` cell types; ``batches`` ``(N,)`` or ``None``; ``seed`` seeds Leiden.
    All values are in [0, 1], higher is better. One distance pass gives the exact
    ``max(n_neighbors, n_lisi_neighbors)``-NN and every silhouette sum.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise TfmkitError("cell-type metrics need at least two distinct labels")
    has_batch = batches is not None and len(np.unique(np.asarray(batches))) >= 2
    S, lab, bat, nn = I.distance_summary(X, labels, batches if has_batch else None,
                                         n_neighbors=max(n_neighbors, n_lisi_neighbors))
    k_graph = min(n_neighbors, nn.n_neighbors)
    nn_graph = nn.subset_neighbors(k_graph)
    clusterings = C.leiden_sweep(C.umap_connectivities(nn_graph), resolutions, seed=seed)
    best = C.nmi_ari_sweep(lab, clusterings)
    out = {
        "nmi": best["nmi"], "ari": best["ari"],
        "asw_label": I.asw_label_from_summary(S, lab, bat),
        "clisi": I.clisi(nn, lab),
        "graph_connectivity": I.graph_connectivity(nn_graph, lab),
    }
    if has_batch:
        out.update({
            "isolated_label_f1": C.isolated_label_f1(lab, bat, clusterings),
            "isolated_label_asw": I.isolated_label_asw_from_summary(S, lab, bat),
            "asw_label_batch": I.asw_label_batch_from_summary(S, lab, bat),
            "asw_batch": I.asw_batch_from_summary(S, lab, bat),
            "ilisi": I.ilisi(nn, bat),
        })
    return {k: float(v) for k, v in out.items()}



BATCH_ONLY_METRICS = ("asw_batch", "ilisi")


def batch_metrics(X, batches, *, n_lisi_neighbors: int = N_LISI_NEIGHBORS) -> dict[str, float]:
    """Batch-mixing metrics of an unlabelled embedding ``X`` ``(N, D)`` over ``batches`` ``(N,)``:
    ``ilisi`` (scaled iLISI) and ``asw_batch`` (``mean(1 − |s_i(batch)|)`` over all cells, i.e.
    scIB's batch ASW with every cell in one label). Needs ≥ 2 batches."""
    batches = np.asarray(batches)
    if len(np.unique(batches)) < 2:
        raise TfmkitError("batch-mixing metrics need at least two distinct batches")
    one = np.zeros(len(batches), dtype=np.int64)
    S, lab, bat, nn = I.distance_summary(X, one, batches, n_neighbors=n_lisi_neighbors)
    return {"asw_batch": float(I.asw_batch_from_summary(S, lab, bat)), "ilisi": float(I.ilisi(nn, bat))}
