"""Perturbation-representation benchmark (TxFM Table 2; Bendidi et al. 2024).

Pure functions over arrays (post-processing and the six tasks) plus the AnnData-facing runner
:func:`benchmark_perturbation` and the ``tfmkit benchmark perturbation`` command.

==============  ==========================================================================
module          content
==============  ==========================================================================
postprocess     center / standardize on controls per batch, TVN, consistency alignment
lisi            iLISI over batches (scib-metrics)
separation      linear probe on unseen batches, kNN retrieval across disjoint batches
consistency     perturbation consistency (leave-one-out cosine vs random-cell null)
recall          biological relationship recall of perturbation-mean embeddings
invertibility   linear decoding of expression: Spearman and structural integrity
ridge           closed-form ridge from per-(batch, control) statistics (probe and decoder)
databases       CORUM / Hallmark / Reactome gene sets (thin wrapper over ``genesets``)
runner          ``benchmark_perturbation(adata, ...)`` -> long results table
report          ``results.csv`` + Table-2-style ``results.md``
commands        ``tfmkit benchmark perturbation``
==============  ==========================================================================
"""

from tfmkit.evaluation.perturbation.consistency import (
    ConsistencyTest,
    consistency_pvalues,
    perturbation_consistency,
)
from tfmkit.evaluation.perturbation.databases import DATABASES, relationship_databases
from tfmkit.evaluation.perturbation.invertibility import (
    invertibility,
    spearman_columns,
    structural_integrity,
)
from tfmkit.evaluation.perturbation.lisi import ilisi
from tfmkit.evaluation.perturbation.postprocess import (
    POSTPROCESSORS,
    align_for_consistency,
    center_on_controls,
    postprocess,
    standardize_on_controls,
    tvn,
)
from tfmkit.evaluation.perturbation.recall import (
    known_pair_matrix,
    pair_recall,
    perturbation_means,
    relationship_recall,
)
from tfmkit.evaluation.perturbation.runner import TASKS, benchmark_perturbation, table2
from tfmkit.evaluation.perturbation.separation import knn_retrieval, linear_probe, topk_accuracy

__all__ = [
    "ConsistencyTest", "DATABASES", "POSTPROCESSORS", "TASKS", "align_for_consistency", "benchmark_perturbation",
    "center_on_controls", "consistency_pvalues", "ilisi", "invertibility", "knn_retrieval",
    "known_pair_matrix", "linear_probe", "pair_recall", "perturbation_consistency",
    "perturbation_means", "postprocess", "relationship_databases", "relationship_recall",
    "spearman_columns", "standardize_on_controls", "structural_integrity", "table2",
    "topk_accuracy", "tvn",
]
