"""Ablation studies (TxFM §5.2, Table 5, §C): a grid of configs trained, evaluated and tested
against the default.

========  ===================================================================================
module    content
========  ===================================================================================
grid      the grid YAML: :class:`Grid`, :class:`Cell`, :func:`load_grid`, :func:`cell_config`
evaluate  one model through the registered benchmark runners: :func:`evaluate_model`
run       train every cell x seed and write the results: :func:`run_ablation`
table     significance vs the default and the Table-5 Markdown: :func:`compare_to_default`,
          :func:`format_ablation_table`
========  ===================================================================================

The ``tfmkit ablate`` command (``tfmkit.cli``) calls these names.
"""

from tfmkit.ablation.evaluate import CELLTYPE_SETS, LOG1P_OBJECTIVES, evaluate_model, load_eval_sets
from tfmkit.ablation.grid import ABLATION_DIR, EVAL_DEFAULTS, Cell, Grid, cell_config, load_grid
from tfmkit.ablation.run import corpus_gene_table, run_ablation
from tfmkit.ablation.table import (
    PROPORTION_METRICS,
    SIGNIFICANCE_NOTE,
    compare_to_default,
    format_ablation_table,
)
from tfmkit.evaluation.significance import benjamini_hochberg, two_proportion_ztest, welch_ttest

__all__ = [
    "ABLATION_DIR", "CELLTYPE_SETS", "Cell", "EVAL_DEFAULTS", "Grid", "LOG1P_OBJECTIVES",
    "PROPORTION_METRICS", "SIGNIFICANCE_NOTE", "benjamini_hochberg", "cell_config",
    "compare_to_default", "corpus_gene_table", "evaluate_model", "format_ablation_table",
    "load_eval_sets", "load_grid", "run_ablation", "two_proportion_ztest", "welch_ttest",
]
