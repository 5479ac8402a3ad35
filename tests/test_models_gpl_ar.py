"""GPL permuted-AR family (issue 10 item 1): collator, rank RoPE, AdaLN, causality, the batched
per-position GPL loss against a brute-force loop, exact resume, and embedding unseen cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import rankdata

import tfmkit
from tfmkit.config import load_config
from tfmkit.data import keys as K
from tfmkit.data.collate_ar import CONDITIONS, RANKS, AutoregressiveCollator, dense_ranks, encode_conditions
from tfmkit.data.corpus import Corpus
from tfmkit.errors import TfmkitError
from tfmkit.models import build_model
from tfmkit.objectives import depth_shift, gpl_nll, z_loss
from tfmkit.tasks import build_task
from tfmkit.training import pretrain

SMALL = ["model.dim=32", "model.depth=2", "model.heads=2", "data.n_revealed=12", "data.min_cells=1",
         "data.val_fraction=0.1", "train.batch_size=8", "train.log_every=1", "train.val_every=0"]


def _batch(n_genes=20, t=7, b=3, seed=0, cond=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(n_genes, generator=g)[:t] for _ in range(b)]) + 4  # (B, T)
    ranks = torch.randint(0, 5, (b, t), generator=g).float()  # (B, T) with ties
    batch = {K.GENE_IDS: ids, RANKS: ranks, K.PADDING: torch.zeros(b, t, dtype=torch.bool)}
    if cond is not None:
        batch[CONDITIONS] = cond
    return batch


def _model(**kw):
    torch.manual_seed(0)
    return build_model("gpl_ar/tiny", 20, dim=32, depth=2, heads=2, **kw).eval()


def test_dense_ranks_tie_rule_matches_scipy():
    x = torch.tensor([[0.0, 3, 1, 3, 0, 7, 1, 2], [5, 5, 0, 0, 0, 1, 9, 9]])
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[1, 0] = False  # an unobservable gene is ignored: the other 5 still ranks
    r = dense_ranks(x, valid)
    for i in range(2):
        pos = (x[i] > 0) & valid[i]
        want = np.zeros(8)
        want[pos.numpy()] = rankdata(x[i][pos].numpy(), method="dense")
        np.testing.assert_array_equal(r[i].numpy(), want)
    assert r[1, 0] == 0


def test_collator_sequences(two_panels):
    corpus = Corpus.from_adatas(two_panels, min_cells=1)
    col = AutoregressiveCollator(10, 0.1, conditions={"batch": ["b0", "b1"]})
    cells = np.arange(6)
    a = col(corpus, cells, torch.Generator().manual_seed(1))
    b = col(corpus, cells, torch.Generator().manual_seed(1))
    c = col(corpus, cells, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the generator alone decides
    assert not torch.equal(a[K.GENE_IDS], c[K.GENE_IDS])
    counts, obs = a[K.COUNTS], a[K.OBSERVABLE]
    whole = dense_ranks(counts, obs)  # (B, G)
    for i in range(len(cells)):
        real = ~a[K.PADDING][i]
        genes = a[K.GENE_IDS][i][real] - 4
        expr = counts[i, genes] > 0
        n_expr, n_zero = int(expr.sum()), int((~expr).sum())
        assert n_expr == min(10, int(((counts[i] > 0) & obs[i]).sum()))
        assert n_zero == min(math.ceil(0.1 * n_expr), int(((counts[i] == 0) & obs[i]).sum()))
        assert len(set(genes.tolist())) == len(genes) and bool(obs[i, genes].all())
        np.testing.assert_array_equal(a[RANKS][i][real].numpy(), whole[i, genes].numpy())
        assert bool(a[K.REVEALED][i, genes].all()) and int(a[K.REVEALED][i].sum()) == len(genes)
    assert a[CONDITIONS].shape == (6, 1) and set(a[CONDITIONS].flatten().tolist()) <= {1, 2}
    desc = AutoregressiveCollator(10, 0.1, order="descending")(corpus, cells, torch.Generator().manual_seed(1))
    r = desc[RANKS].masked_fill(desc[K.PADDING], -1)
    assert bool((r[:, 1:] <= r[:, :-1]).all())  # most expressed first, padding last


def test_conditions_fixed_categories_and_unknown(two_panels):
    obs = two_panels["panel_a"].obs.iloc[:4].copy()
    obs.loc[obs.index[0], "batch"] = "b9"
    bad = "obs column 'batch' has value\\(s\\) \\['b9'\\] missing from model.conditions.batch"
    with pytest.raises(TfmkitError, match=bad):
        encode_conditions(obs, {"batch": ["b0", "b1"]}, strict=True)
    with pytest.raises(TfmkitError, match="AdaLN condition column 'donor' is not in the data's obs columns"):
        encode_conditions(obs, {"donor": ["d1"]}, strict=True)
    idx = encode_conditions(obs, {"batch": ["b0", "b1"], "donor": ["d1"]}, strict=False)
    want = [0] + [1 + ["b0", "b1"].index(v) for v in obs["batch"].iloc[1:]]
    assert idx[:, 0].tolist() == want and idx[:, 1].tolist() == [0, 0, 0, 0]  # sorted columns


def test_rank_rope_logits_follow_genes_not_positions():
    model = _model()
    batch = _batch()
    scores = model.attention_logits(batch)  # (B, H, T, T)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    shuffled = {k: v[:, perm] for k, v in batch.items()}
    s2 = model.attention_logits(shuffled)
    torch.testing.assert_close(s2, scores[:, :, perm][:, :, :, perm], atol=1e-5, rtol=1e-5)
    shifted = dict(batch, **{RANKS: batch[RANKS] + 37.0})  # only rank differences matter
    torch.testing.assert_close(model.attention_logits(shifted), scores, atol=1e-4, rtol=1e-4)
    moved = batch[RANKS].clone()
    moved[:, 2] += 3.0
    changed = model.attention_logits(dict(batch, **{RANKS: moved}))
    assert (changed[:, :, 2] - scores[:, :, 2]).abs().max() > 1e-3  # rank enters the logits
    torch.testing.assert_close(changed[:, :, :2, :2], scores[:, :, :2, :2])


def test_causal_positions_ignore_later_tokens():
    model = _model()
    batch = _batch()
    out = model(batch)
    later = {k: v.clone() for k, v in batch.items()}
    later[K.GENE_IDS][:, 4:] = torch.tensor([21, 22, 23])
    later[RANKS][:, 4:] = 9.0
    out2 = model(later)
    logits, logits2 = out.token_outputs["gene_logits"], out2.token_outputs["gene_logits"]
    torch.testing.assert_close(logits2[:, :4], logits[:, :4])
    assert (logits2[:, 4:] - logits[:, 4:]).abs().max() > 1e-4
    earlier = {k: v.clone() for k, v in batch.items()}
    earlier[K.GENE_IDS][:, 0] = 23
    earlier[RANKS][:, 0] += 2.0
    assert (model(earlier).token_outputs["gene_logits"][:, 1:] - logits[:, 1:]).abs().max() > 1e-4
    torch.testing.assert_close(out.gene_logits, logits[:, -1])  # last position's prediction


def test_adaln_zero_init_is_identity_until_trained():
    conds = {"batch": ["b0", "b1"], "tissue": ["lung", "blood", "gut"]}
    model = _model(conditions=conds)
    a = _batch(cond=torch.tensor([[1, 1], [2, 3], [0, 0]]))
    b = _batch(cond=torch.tensor([[2, 3], [1, 0], [1, 2]]))
    ref = model(_batch())  # no condition key at all
    for batch in (a, b):
        torch.testing.assert_close(model(batch).token_outputs["gene_logits"], ref.token_outputs["gene_logits"])
    with torch.no_grad():
        for blk in model.blocks:
            blk.norm1.mod.weight.normal_(std=0.5)
    assert (model(a).token_states - model(b).token_states).abs().max() > 1e-3
    with pytest.raises(TfmkitError, match="batch has 1 condition columns, the model was built for 2"):
        model(_batch(cond=torch.zeros(3, 1, dtype=torch.long)))


@pytest.mark.parametrize("target", ["full", "remaining"])
def test_ar_loss_equals_per_position_loop(target, two_panels):
    cfg = load_config("gpl_ar_tiny", SMALL + [
        f"train.objective_kwargs={{depth_shift: true, z_loss_weight: 0.01, target: {target}}}"])
    corpus = Corpus.from_adatas(two_panels, min_cells=1)
    task = build_task(cfg, corpus.vocab.n_genes)
    with torch.no_grad():
        task.s0.fill_(0.7)
    batch = task.collator(corpus)(corpus, np.arange(60, 66), torch.Generator().manual_seed(3))
    batch[K.PADDING][0, -2:] = True  # ragged cells
    out = build_model(cfg.model, corpus.vocab.n_genes)(batch)
    got = task.loss(out, batch)  # (B,)
    want = []
    for i in range(got.shape[0]):
        per = []
        for t in range(batch[K.GENE_IDS].shape[1]):
            if batch[K.PADDING][i, t]:
                continue
            obs = batch[K.OBSERVABLE][i:i + 1]
            mask = obs.clone()
            if target == "remaining":
                mask[0, batch[K.GENE_IDS][i, :t + 1] - 4] = False
            phi = out.token_outputs["gene_logits"][i, t][None]
            shifted = depth_shift(phi, batch[K.LIBRARY_SIZE][i:i + 1], obs.sum(-1), 0.7)
            per.append(gpl_nll(shifted, batch[K.COUNTS][i:i + 1], mask) + z_loss(phi, obs, 0.01))
        want.append(torch.cat(per).mean())
    torch.testing.assert_close(got, torch.stack(want), atol=1e-4, rtol=1e-5)
    got.mean().backward()  # differentiable end to end
    assert task.s0.grad is not None and torch.isfinite(task.s0.grad)


def test_task_refusals():
    with pytest.raises(TfmkitError, match="train.task 'gpl_ar' scores with one of gpl_nll"):
        load_config("gpl_ar_tiny", ["train.objective=mse"])
    with pytest.raises(TfmkitError, match="needs model output\\(s\\) token:gene_logits, which model family 'txfm'"):
        load_config("txfm_tiny", ["train.task=gpl_ar", "train.objective=gpl_nll"])
    with pytest.raises(TfmkitError, match="unknown train.objective_kwargs \\['loss_on'\\]"):
        build_task(load_config("gpl_ar_tiny", ["train.objective_kwargs={loss_on: masked}"]), 10)
    with pytest.raises(TfmkitError, match="even head width"):
        build_model("gpl_ar/tiny", 10, dim=30, heads=2)


def test_resume_is_exact_with_conditions(tmp_path, two_panels):
    cfg = load_config("gpl_ar_tiny", SMALL + ["train.steps=6", "train.checkpoint_every=3",
                                              "model.conditions={batch: [b0, b1]}", "model.condition_dropout=0.3"])
    full = pretrain(cfg, tmp_path / "full", adatas=two_panels, progress=False)
    part = tmp_path / "part"
    pretrain(cfg, part, adatas=two_panels, stop_after=3, progress=False)
    resumed = pretrain(cfg, part, adatas=two_panels, resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and any("cond" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_embed_unseen_cells_mean_of_final_states(tmp_path, two_panels):
    cfg = load_config("gpl_ar_tiny", SMALL + ["train.steps=3", "train.checkpoint_every=3",
                                              "model.conditions={batch: [b0]}"])
    with pytest.raises(TfmkitError, match="missing from model.conditions.batch"):
        pretrain(cfg, tmp_path / "strict", adatas=two_panels, progress=False)
    cfg = load_config("gpl_ar_tiny", SMALL + ["train.steps=3", "train.checkpoint_every=3",
                                              "model.conditions={batch: [b0, b1]}"])
    bundle = tfmkit.load_model(pretrain(cfg, tmp_path / "run", adatas=two_panels, progress=False))
    assert bundle.module.config.conditions == {"batch": ["b0", "b1"]}
    unseen = two_panels["panel_b"].copy()
    unseen.obs["batch"] = ["b0", "b7"] * (unseen.n_obs // 2)  # b7: a category never trained
    tfmkit.embed(unseen, bundle, key="X_ar", batch_size=7)
    emb = unseen.obsm["X_ar"]
    assert emb.shape == (unseen.n_obs, 32) and np.isfinite(emb).all() and emb.std(0).max() > 0
    # the documented choice: cell embedding = mean of the final states of the real tokens
    col = build_task(bundle.run_config, bundle.vocab.n_genes).inference_collator(
        Corpus.from_adata_for_inference(unseen, bundle.vocab), None)
    batch = col(Corpus.from_adata_for_inference(unseen, bundle.vocab), np.arange(5), torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = bundle.module.encode_cells(batch)
        states = out.token_states
        want = torch.stack([states[i][~batch[K.PADDING][i]].mean(0) for i in range(5)])
        got = bundle.module.cell_embedding(batch, pooling="cls")
        torch.testing.assert_close(got, want)
        for i in range(5):  # padding and batch-mates do not leak into a cell's embedding
            n = int((~batch[K.PADDING][i]).sum())
            one = {k: v[i:i + 1, :n] if k in (K.GENE_IDS, K.VALUES, K.PADDING, RANKS) else v[i:i + 1]
                   for k, v in batch.items()}
            torch.testing.assert_close(bundle.module.cell_embedding(one), got[i:i + 1], atol=1e-5, rtol=1e-5)
    genes = tfmkit.gene_embeddings(bundle, kind="decoder")
    assert list(genes.index) == list(bundle.vocab.genes) and genes.shape[1] == 32
