"""Block-shuffled, resumable loading: DataLoader workers x DDP ranks partition every epoch
(every cell id counted), exact resume, block locality, and pretraining on a backed store."""

import numpy as np
import pytest
import torch
from conftest import GENES, make_counts
from safetensors.torch import load_file

from tfmkit.config import load_config
from tfmkit.data.corpus import Corpus, CorpusBatches, make_dataloader
from tfmkit.data.sources import open_corpus
from tfmkit.data.stores.backed_h5ad import H5adStore
from tfmkit.errors import TfmkitError
from tfmkit.training import pretrain


class CellIds:
    """A collator that returns the cell indices of the batch (picklable for workers)."""

    fields = ("cells",)

    def __call__(self, store, cell_idx, generator):
        return {"cells": torch.as_tensor(np.asarray(cell_idx))}


@pytest.fixture
def backed(tmp_path):
    paths = []
    for i, n in enumerate((150, 90)):
        p = tmp_path / f"d{i}.h5ad"
        make_counts(n, GENES[i * 5:i * 5 + 30], seed=i).write_h5ad(p)
        paths.append(p)
    store = open_corpus(paths, min_cells=1, max_in_memory_gb=0, cache_dir=tmp_path / "c", block_cells=8)
    assert isinstance(store, H5adStore) and store.shuffle_block == 8
    return store


def _epoch_cells(store, cells, *, rank, world, workers, epoch=0, batch=10, start=0, **kw):
    loader = make_dataloader(store, cells, batch_size=batch, seed=5, collate=CellIds(), rank=rank,
                             world_size=world, num_workers=workers, start_step=start, **kw)
    n = loader.steps_per_epoch
    it = iter(loader)
    out = [next(it)["cells"].numpy() for _ in range(n * (epoch + 1) - start)]
    return out[-n:] if start == 0 else out


@pytest.mark.parametrize("block", [None, 1])  # the store's block shuffling, and a full permutation
def test_two_ranks_two_workers_partition_every_epoch(backed, block):
    cells = np.arange(backed.n_cells)  # 240 = 2 ranks x 12 steps x 10 cells
    for epoch in (0, 1):
        seen = [_epoch_cells(backed, cells, rank=r, world=2, workers=2, epoch=epoch, block_size=block)
                for r in (0, 1)]
        ids = np.concatenate([np.concatenate(s) for s in seen])
        assert len(ids) == 240 and len(np.unique(ids)) == 240  # no duplicate, no gap
        np.testing.assert_array_equal(np.sort(ids), cells)
    assert not np.array_equal(np.concatenate(seen[0]),
                              np.concatenate(_epoch_cells(backed, cells, rank=0, world=2, workers=0,
                                                          block_size=block)))  # epochs differ


def test_remainder_is_left_out_without_duplicates(backed):
    cells = np.arange(3, backed.n_cells)  # 237 cells, 2 ranks x batch 10: 17 left out per epoch
    ids = np.concatenate([np.concatenate(_epoch_cells(backed, cells, rank=r, world=2, workers=0))
                          for r in (0, 1)])
    assert len(np.unique(ids)) == len(ids) == 220 and set(ids) <= set(cells)


def test_block_shuffle_is_resumable_local_and_independent_of_workers(backed):
    cells = np.arange(backed.n_cells)
    full = _epoch_cells(backed, cells, rank=1, world=2, workers=0, epoch=1)
    resumed = _epoch_cells(backed, cells, rank=1, world=2, workers=2, start=12 + 5)
    for a, b in zip(full[5:], resumed):
        np.testing.assert_array_equal(a, b)  # exact resume, same batches with 2 workers
    ds = CorpusBatches(backed, cells, batch_size=10, seed=5, collate=CellIds(), window_blocks=1)
    blocks = [len(set(backed.block_ids(ds.cells_for_step(s)))) for s in range(2 * ds.steps_per_epoch)]
    # 10 cells from windows of 8 shuffled positions, one read block each (d0's last block has
    # 6 rows, so a window can hold the tail of a second one): <= 3 blocks, vs ~10 when permuted
    assert max(blocks) <= 3 and np.mean(blocks) < 2.5
    ids = backed.block_ids(np.arange(backed.n_cells))
    assert ids[149] != ids[150]  # read blocks never cross datasets (150 cells in d0)
    with pytest.raises(TfmkitError, match="must be >= 1"):
        CorpusBatches(backed, cells, batch_size=10, seed=5, collate=CellIds(), block_size=0)


def test_in_memory_store_keeps_its_full_permutation(two_panels):
    corpus = Corpus.from_adatas(two_panels, min_cells=1)
    cells = np.arange(corpus.n_cells)
    ds = CorpusBatches(corpus, cells, batch_size=8, seed=3, collate=CellIds(), rank=1, world_size=2)
    assert ds.block_size == 1
    perm = cells[np.random.default_rng([3, 2]).permutation(len(cells))][1::2][:56]
    np.testing.assert_array_equal(ds.epoch_cells(2), perm)


SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.decoder_layers=1",
         "data.n_revealed=12", "data.min_cells=1", "data.val_fraction=0.1", "train.batch_size=8",
         "train.checkpoint_every=2", "train.log_every=1", "train.val_every=3"]


def test_pretrain_on_backed_store_resumes_exactly(tmp_path, backed):
    cfg = load_config("txfm_tiny", SMALL + ["train.steps=6"])
    cfg.data.paths = [str(p) for p in backed.paths]
    cfg.data.max_in_memory_gb = 0.0  # the DataConfig field (read with getattr until it exists)
    full = pretrain(cfg, tmp_path / "full", progress=False)
    part = tmp_path / "part"
    pretrain(cfg, part, stop_after=3, progress=False)
    resumed = pretrain(cfg, part, resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
