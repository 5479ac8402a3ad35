"""Count stores that do not hold the corpus in RAM (issue 13), behind
:class:`tfmkit.data.store.CountStore`:

- :class:`~tfmkit.data.stores.backed_h5ad.H5adStore` — ``.h5ad`` files read in row blocks;
- :class:`~tfmkit.data.stores.sharded.ShardedStore` — the memory-mapped shards written by
  ``tfmkit prepare`` (:func:`~tfmkit.data.stores.writer.write_store`), for fast shuffled access;
- :class:`~tfmkit.data.stores.soma.SomaStore` — a TileDB-SOMA experiment (the CELLxGENE Census
  format; needs the optional ``tiledbsoma`` package).

The in-memory CSR store is :class:`tfmkit.data.corpus.Corpus`. :func:`tfmkit.data.sources.open_corpus`
picks one from the ``--data`` entries.
"""
