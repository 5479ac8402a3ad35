"""Constant keys of the batch dictionaries produced by the collators (:mod:`tfmkit.data.collate`).

Shapes: ``B`` cells, ``K`` revealed (unmasked) genes per cell (padded), ``G`` vocabulary genes.
"""

GENE_IDS = "gene_ids"  # (B, K) int64 vocabulary ids of revealed genes (PAD id where padded)
VALUES = "values"  # (B, K) float32 log1p-normalised expression of revealed genes
PADDING = "padding"  # (B, K) bool, True where the slot is padding
TARGET = "target"  # (B, G) float32 log1p-normalised expression of every vocabulary gene
OBSERVABLE = "observable"  # (B, G) bool, True where the cell's dataset measured the gene
COUNTS = "counts"  # (B, G) float32 raw counts of every vocabulary gene (0 where unobserved)
REVEALED = "revealed"  # (B, G) bool, True where the gene was shown to the encoder
LIBRARY_SIZE = "library_size"  # (B,) float32 total raw counts of the cell
DATASET = "dataset"  # (B,) int64 index of the source dataset in the corpus
STEP = "step"  # () int64 global step of the batch, added by the step-seeded loader

PRETRAIN_FIELDS = (GENE_IDS, VALUES, PADDING, TARGET, OBSERVABLE, COUNTS, REVEALED, LIBRARY_SIZE, DATASET)
"""Keys emitted by :class:`tfmkit.data.collate.PretrainCollator` (and ``Corpus.batch``)."""
