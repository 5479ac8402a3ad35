"""AnnData-facing benchmark runners (SPEC §6): each returns the long-format results table.

- :func:`benchmark_celltype` — clustering, batch-integration and probe metrics of
  ``adata.obsm`` embeddings beside baselines computed on the same cells (TxFM Table 4;
  :mod:`tfmkit.evaluation.celltype_benchmark`).
- :func:`benchmark_genes` — gene-level biology of a model's gene tables: gene-gene relationship
  recall (TxFM §B.3), GRN AUROC against a TF -> target table with a co-expression baseline and
  an LDA probe of a gene annotation (GPL §2.3, Suppl. F-G), beside PCA loadings and a gene-label
  shuffle (:mod:`tfmkit.evaluation.gene_benchmark`).
- :func:`benchmark_pretraining` — held-out full-transcriptome Spearman and binary correctness
  at given masking rates with each cell's top-expressed genes as context, capped at the
  model's training context (GPL Suppl. D), beside a per-gene mean-profile baseline
  (:mod:`tfmkit.evaluation.pretraining_benchmark`).

Every runner takes ``max_cells`` / ``seed`` (a seeded subsample of the cells,
:mod:`tfmkit.evaluation.subsample`), so its cost is bounded on large inputs
(``benchmarks/benchmark_cost.py`` measures time and memory on 5,000 cells x 20,000 genes).
None of them writes to ``adata``. Write the table with :func:`tfmkit.evaluation.report.write_results`.
"""

from __future__ import annotations

from tfmkit.evaluation.celltype_benchmark import (DEFAULT_CELLTYPE_BASELINES, MIN_CELLTYPE_CELLS,
                                                  PROBES, benchmark_celltype)
from tfmkit.evaluation.gene_benchmark import (GENE_TASKS, benchmark_genes, gene_representations,
                                              pca_loadings)
from tfmkit.evaluation.pretraining_benchmark import (DEFAULT_MASK_RATES, DEFAULT_MAX_CELLS,
                                                     benchmark_pretraining)
from tfmkit.evaluation.pretraining_benchmark import mean_profile as _mean_profile

__all__ = ["DEFAULT_CELLTYPE_BASELINES", "DEFAULT_MASK_RATES", "DEFAULT_MAX_CELLS", "GENE_TASKS",
           "MIN_CELLTYPE_CELLS", "PROBES", "benchmark_celltype", "benchmark_genes",
           "benchmark_pretraining", "gene_representations", "pca_loadings", "_mean_profile"]
