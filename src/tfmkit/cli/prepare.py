"""``tfmkit prepare``: write count files as a sharded on-disk store for fast shuffled reading.

``tfmkit prepare IN... --out STORE`` reads ``.h5ad`` / 10x ``.h5`` files, directories of them or
manifests (``.txt`` / ``.csv``) in one streaming pass, builds the gene vocabulary, and writes
memory-mapped CSR shards (:mod:`tfmkit.data.stores.sharded`); train on it with
``tfmkit pretrain --data STORE``. STORE must not exist; nothing is left there on failure.
"""

from __future__ import annotations

import typer


def prepare(
    inputs: list[str] = typer.Argument(..., help="Raw-count .h5ad / 10x .h5 files, directories of them, or .txt/.csv manifests."),
    out: str = typer.Option(..., "--out", "-o", help="Store directory to create (must not exist)."),
    layer: str = typer.Option(None, "--layer", help="Layer holding raw counts (default X; 'raw' = adata.raw)."),
    min_cells: int = typer.Option(10, "--min-cells", help="Vocabulary: keep genes nonzero in at least this many cells."),
    shard_cells: int = typer.Option(65536, "--shard-cells", help="Cells per shard."),
    allow_low_coverage: bool = typer.Option(False, "--allow-low-coverage", help="Keep files few of whose genes map to HGNC symbols."),
) -> None:
    """Write IN... as a sharded count store for `tfmkit pretrain --data STORE`."""
    from tfmkit.data.stores.sharded import ShardedStore
    from tfmkit.data.stores.writer import write_store

    path = write_store(inputs, out, layer=layer, min_cells=min_cells, shard_cells=shard_cells,
                       allow_low_coverage=allow_low_coverage, progress=lambda m: typer.echo(m, err=True))
    store = ShardedStore(path)
    typer.echo(f"wrote {path}: {store.n_cells} cells, {len(store.names)} datasets, "
               f"{store.vocab.n_genes} genes, {len(store.shards)} shards")
