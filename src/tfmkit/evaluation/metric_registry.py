"""Metric registry (scib-metrics / cz-benchmarks style): every metric name a benchmark emits.

Each :class:`Metric` carries its ``name`` (the ``metric`` column of the long results table),
the task families it is reported under (``clustering``, ``batch_integration``, ``probe``,
``knn``, ``gene_recall``, ``grn``, ``gene_annotation``, ``reconstruction``, ``perturbation``),
whether a higher value is better, a one-line description and, where one exists, the pure array function that computes it
(``"module:function"``, imported only on :meth:`Metric.function`). Report tables
(:mod:`tfmkit.evaluation.report`), the ablation tables and the demo read the metric direction
from here (:func:`higher_is_better`) instead of keeping their own lists.

Add a metric with the decorator::

    @register_metric("my_score", task="clustering", higher_is_better=True,
                     description="what it measures, in one line")
    def my_score(X, labels) -> float: ...
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from tfmkit.errors import TfmkitError
from tfmkit.registry import Registry

#: Task families a metric can be reported under (the ``task`` of a :class:`Metric`).
TASK_FAMILIES = {
    "clustering": "cell-type structure of an embedding (Leiden sweep, silhouettes, cLISI)",
    "batch_integration": "mixing of batches in an embedding (iLISI, batch ASW, connectivity)",
    "probe": "held-out label prediction from an embedding (linear / MLP / kNN probes)",
    "knn": "zero-shot kNN label transfer, stratified k-fold cross-validation",
    "gene_recall": "recall of known gene-gene relationships by gene representations",
    "grn": "zero-shot TF -> target recovery from gene representations (per-TF AUROC)",
    "gene_annotation": "linear (LDA) probe of a gene annotation from gene representations",
    "reconstruction": "held-out expression reconstruction of a pretrained model",
    "perturbation": "perturbation-representation benchmark tasks (TxFM Table 2)",
    "perturbation_prediction": "pseudobulk prediction of perturbed expression profiles (GPL §4.6)",
}


@dataclass(frozen=True)
class Metric:
    """One registered metric (see module doc)."""

    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    path: str | None = None  # "module:function" of the pure array function, if any
    fn: Callable | None = field(default=None, compare=False, repr=False)  # set by the decorator

    @property
    def task(self) -> str:
        """The main task family of the metric (the first of ``tasks``)."""
        return self.tasks[0]

    def function(self) -> Callable | None:
        """The pure function that computes the metric (imported now), or ``None``."""
        if self.fn is not None or self.path is None:
            return self.fn
        module, attr = self.path.split(":")
        return getattr(importlib.import_module(module), attr)


METRICS: Registry[Metric] = Registry("metric")


def add_metric(name: str, *, task: str, higher_is_better: bool, description: str,
               also: tuple[str, ...] = (), path: str | None = None,
               fn: Callable | None = None) -> Metric:
    """Register a metric ``name`` (``task`` first, then the task families in ``also``)."""
    tasks = (task, *also)
    bad = [t for t in tasks if t not in TASK_FAMILIES]
    if bad:
        raise ValueError(f"metric {name!r}: unknown task family {bad}; use {sorted(TASK_FAMILIES)}")
    if not description.strip() or "\n" in description.strip():
        raise ValueError(f"metric {name!r} needs a one-line description")
    entry = Metric(name, tasks, bool(higher_is_better), description.strip(), path, fn)
    METRICS.register(name)(entry)
    return entry


def register_metric(name: str, *, task: str, higher_is_better: bool, description: str,
                    also: tuple[str, ...] = ()) -> Callable:
    """Decorator registering the decorated pure function as metric ``name``."""

    def deco(fn: Callable) -> Callable:
        add_metric(name, task=task, higher_is_better=higher_is_better, description=description,
                   also=also, path=f"{fn.__module__}:{fn.__qualname__}", fn=fn)
        return fn

    return deco


def ensure_metric(name: str, *, task: str, higher_is_better: bool, description: str) -> Metric:
    """Register ``name`` unless it already is (e.g. a user's gene-set database used as a gene
    recall metric); an existing entry must agree on the direction."""
    if name in METRICS:
        entry = METRICS.get(name)
        if entry.higher_is_better != higher_is_better:
            raise TfmkitError(f"metric {name!r} is already registered with the opposite direction; "
                              "rename the database or metric")
        return entry
    return add_metric(name, task=task, higher_is_better=higher_is_better, description=description)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; a one-line :class:`TfmkitError` if it is unknown."""
    if name not in METRICS:
        raise TfmkitError(f"metric {name!r} is not registered; register it with "
                          "tfmkit.evaluation.metric_registry.register_metric (registered: "
                          f"{', '.join(METRICS.names())})")
    return METRICS.get(name)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (from the registry)."""
    return get_metric(name).higher_is_better


# ---------------------------------------------------------------------------- built-in metrics
_C, _I, _PQ = ("tfmkit.evaluation.clustering", "tfmkit.evaluation.integration",
               "tfmkit.evaluation.pretraining_quality")
_P = "tfmkit.evaluation.perturbation"
for _name, _task, _also, _hib, _path, _desc in [
    ("nmi", "clustering", (), True, f"{_C}:nmi_ari_sweep",
     "NMI of Leiden clusters and labels at the best resolution of the sweep (TxFM eq. 14)"),
    ("ari", "clustering", (), True, f"{_C}:nmi_ari_sweep",
     "ARI of Leiden clusters and labels at the max-NMI resolution (TxFM eq. 15)"),
    ("asw_label", "clustering", (), True, f"{_I}:silhouette_label",
     "label silhouette width rescaled to [0, 1] (TxFM eq. 16)"),
    ("clisi", "clustering", (), True, f"{_I}:clisi",
     "scaled cell-type LISI over 90 neighbours (1 = neighbourhoods of one label)"),
    ("isolated_label_f1", "clustering", (), True, f"{_C}:isolated_label_f1",
     "scIB isolated-label F1 of the best Leiden cluster over the sweep"),
    ("isolated_label_asw", "clustering", (), True, f"{_I}:isolated_label_asw",
     "scIB isolated-label silhouette (rescaled) of labels present in the fewest batches"),
    ("asw_label_batch", "batch_integration", (), True, f"{_I}:silhouette_label_batch",
     "label silhouette computed within each batch, rescaled (TxFM eq. 17)"),
    ("asw_batch", "batch_integration", (), True, f"{_I}:silhouette_batch",
     "scIB batch ASW: 1 - |batch silhouette| within labels (all cells if unlabelled)"),
    ("ilisi", "batch_integration", ("perturbation",), True, f"{_I}:ilisi",
     "scaled integration LISI over batches (1 = batches fully mixed)"),
    ("graph_connectivity", "batch_integration", (), True, f"{_I}:graph_connectivity",
     "scIB graph connectivity: largest connected share of each label's 15-NN graph"),
    ("accuracy", "probe", ("knn",), True, None,
     "fraction of held-out cells whose label is predicted correctly"),
    ("macro_f1", "probe", ("knn",), True, None,
     "F1 score averaged over labels with equal weight (held-out cells)"),
    ("corum", "gene_recall", ("perturbation",), True, "tfmkit.evaluation.gene_recall:gene_relationship_recall",
     "recall of CORUM complex gene pairs in the 5% cosine tails beyond a random-pair null"),
    ("hallmark", "gene_recall", ("perturbation",), True, "tfmkit.evaluation.gene_recall:gene_relationship_recall",
     "recall of MSigDB Hallmark gene pairs in the 5% cosine tails beyond a random-pair null"),
    ("canonical_pathways", "gene_recall", (), True, "tfmkit.evaluation.gene_recall:gene_relationship_recall",
     "recall of MSigDB canonical-pathway gene pairs in the 5% cosine tails beyond the null"),
    ("reactome", "gene_recall", ("perturbation",), True, "tfmkit.evaluation.gene_recall:gene_relationship_recall",
     "recall of Reactome gene pairs in the 5% cosine tails beyond a random-pair null"),
    ("combined", "gene_recall", (), True, "tfmkit.evaluation.gene_recall:gene_relationship_recall",
     "gene-pair recall over the union of all requested databases"),
    ("grn_auroc", "grn", (), True, "tfmkit.evaluation.grn:grn_auroc",
     "mean per-TF AUROC of known targets by cosine to the TF, inverted for repressors (GPL §2.3)"),
    ("grn_auroc_cosine", "grn", (), True, "tfmkit.evaluation.grn:grn_auroc",
     "mean per-TF AUROC of known targets by cosine to the TF, no inversion for repressors"),
    ("lda_balanced_accuracy", "gene_annotation", (), True, "tfmkit.evaluation.gene_lda:lda_probe",
     "5-fold LDA balanced accuracy of a one-label gene annotation (GPL Suppl. G; chance 1/classes)"),
    ("poisson_loss", "reconstruction", (), False, f"{_PQ}:poisson_loss_per_cell",
     "Poisson negative log-likelihood of the observable genes (TxFM eq. 2)"),
    ("spearman", "reconstruction", ("perturbation",), True, f"{_PQ}:spearman_per_cell",
     "Spearman correlation of predicted and observed expression (per cell / per gene)"),
    ("spearman_masked", "reconstruction", (), True, f"{_PQ}:spearman_per_cell",
     "per-cell Spearman correlation over the observable genes hidden from the encoder"),
    ("binary_correctness", "reconstruction", (), True, f"{_PQ}:binary_correctness_per_cell",
     "share of observable genes whose zero / non-zero status is predicted right (GPL §4.5)"),
    ("binary_correctness_masked", "reconstruction", (), True, f"{_PQ}:binary_correctness_per_cell",
     "binary correctness over the observable genes hidden from the encoder"),
    ("top1", "perturbation", (), True, f"{_P}.separation:topk_accuracy",
     "top-1 accuracy of perturbation prediction on unseen batches (percent)"),
    ("top5", "perturbation", (), True, f"{_P}.separation:topk_accuracy",
     "top-5 accuracy of perturbation prediction on unseen batches (percent)"),
    ("consistent", "perturbation", (), True, f"{_P}.consistency:perturbation_consistency",
     "percent of perturbations whose cells agree beyond a random-cell null (p < 0.01)"),
    ("structural_integrity", "perturbation", (), True, f"{_P}.invertibility:structural_integrity",
     "structure of expression kept by a linear decoder of the embedding (percent)"),
    ("score", "perturbation", (), True, None,
     "mean of a perturbation task's metrics; 'avg' averages the best task scores (TxFM §B.1)"),
]:
    add_metric(_name, task=_task, also=_also, higher_is_better=_hib, description=_desc, path=_path)

_PP = "tfmkit.evaluation.perturbation_prediction"
for _name, _hib, _path, _desc in [
    ("mae", False, f"{_PP}:pseudobulk_mae",
     "mean absolute error of predicted vs observed pseudobulk log1p profiles, all genes (GPL §4.6)"),
    ("mae_hvg", False, f"{_PP}:pseudobulk_mae",
     "mean absolute error of predicted vs observed pseudobulk over highly variable genes"),
    ("pearson_delta", True, f"{_PP}:pearson_delta",
     "Pearson correlation of predicted and observed change from the context's control mean"),
    ("centroid_accuracy", True, f"{_PP}:centroid_accuracy",
     "share of perturbations whose prediction is nearest to their own observed pseudobulk"),
    ("de_overlap", True, f"{_PP}:de_overlap",
     "Overlap@N of the N true DE genes with the N largest predicted changes"),
]:
    add_metric(_name, task="perturbation_prediction", higher_is_better=_hib, description=_desc, path=_path)
