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
:func:`embedding_geometry` does the one distance pass (for several labelings at once) and
:func:`metrics_from_geometry` scores it for any labeling and Leiden seed, so seeds that share
their cells, and the label-shuffle control, reuse one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Geometry:
    """What every metric of one embedding needs, computed once (:func:`embedding_geometry`):
    per labeling ``j`` the silhouette sums ``sums[j]`` and label codes ``labs[j]``, the batch
    codes, the exact k-NN and the UMAP connectivities. Leiden clusterings are cached per seed,
    so the seeds of a benchmark that all use the same cells (and the label-shuffle control,
    which shares the embedding) pay one distance pass and one sweep per seed."""

    sums: list
    labs: list
    bat: np.ndarray
    has_batch: bool
    nn: object
    nn_graph: object
    connectivities: object
    clusterings: dict = field(default_factory=dict)

    def leiden(self, seed: int, resolutions=C.RESOLUTIONS) -> list[np.ndarray]:
        key = (seed, tuple(resolutions))
        if key not in self.clusterings:
            self.clusterings[key] = C.leiden_sweep(self.connectivities, resolutions, seed=seed)
        return self.clusterings[key]


def embedding_geometry(X, label_sets, batches=None, *, n_neighbors: int = N_NEIGHBORS,
                       n_lisi_neighbors: int = N_LISI_NEIGHBORS) -> Geometry:
    """One distance pass over embedding ``X`` ``(N, D)`` for the labelings ``label_sets``
    (each ``(N,)``) and ``batches`` (``(N,)`` or ``None``; used when it has ≥ 2 values):
    silhouette sums, the exact ``max(n_neighbors, n_lisi_neighbors)``-NN and the
    ``n_neighbors`` UMAP graph (:func:`~tfmkit.evaluation.integration.distance_summaries`)."""
    has_batch = batches is not None and len(np.unique(np.asarray(batches))) >= 2
    sums, labs, bat, nn = I.distance_summaries(X, [np.asarray(y) for y in label_sets],
                                               batches if has_batch else None,
                                               n_neighbors=max(n_neighbors, n_lisi_neighbors))
    nn_graph = nn.subset_neighbors(min(n_neighbors, nn.n_neighbors))
    return Geometry(sums, labs, bat, has_batch, nn, nn_graph, C.umap_connectivities(nn_graph))


def metrics_from_geometry(geo: Geometry, j: int = 0, *, seed: int = 0,
                          resolutions=C.RESOLUTIONS) -> dict[str, float]:
    """Every metric of the module table for labeling ``j`` of ``geo`` (Leiden seeded with
    ``seed``); equal to :func:`celltype_metrics` on the same embedding and labels."""
    S, lab, bat = geo.sums[j], geo.labs[j], geo.bat
    if len(np.unique(lab)) < 2:
        raise TfmkitError("cell-type metrics need at least two distinct labels")
    clusterings = geo.leiden(seed, resolutions)
    best = C.nmi_ari_sweep(lab, clusterings)
    out = {
        "nmi": best["nmi"], "ari": best["ari"],
        "asw_label": I.asw_label_from_summary(S, lab, bat),
        "clisi": I.clisi(geo.nn, lab),
        "graph_connectivity": I.graph_connectivity(geo.nn_graph, lab),
    }
    if geo.has_batch:
        out.update({
            "isolated_label_f1": C.isolated_label_f1(lab, bat, clusterings),
            "isolated_label_asw": I.isolated_label_asw_from_summary(S, lab, bat),
            "asw_label_batch": I.asw_label_batch_from_summary(S, lab, bat),
            "asw_batch": I.asw_batch_from_summary(S, lab, bat),
            "ilisi": I.ilisi(geo.nn, bat),
        })
    return {k: float(v) for k, v in out.items()}


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
    geo = embedding_geometry(X, [labels], batches, n_neighbors=n_neighbors,
                             n_lisi_neighbors=n_lisi_neighbors)
    return metrics_from_geometry(geo, 0, seed=seed, resolutions=resolutions)


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


def batch_metrics_from_geometry(geo: Geometry) -> dict[str, float]:
    """:func:`batch_metrics` from a geometry whose labeling 0 puts every cell in one label."""
    S, lab, bat = geo.sums[0], geo.labs[0], geo.bat
    return {"asw_batch": float(I.asw_batch_from_summary(S, lab, bat)), "ilisi": float(I.ilisi(geo.nn, bat))}
