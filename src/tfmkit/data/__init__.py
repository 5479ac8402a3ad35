"""Data pipeline: readers, validation, gene vocabulary, normalisation, masking, corpus."""
