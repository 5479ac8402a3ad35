"""Gene and expression encodings: every registered name, plus known-answer checks."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tfmkit.encoders import (
    EXPRESSION_ENCODERS,
    GENE_ENCODERS,
    HardBinExpression,
    LogBinExpression,
    PeriodicExpression,
    PretrainedGeneEncoder,
    SoftBinExpression,
    TokenEmbedding,
    load_gene_table,
)
from tfmkit.errors import TfmkitError

N_SPECIAL, DIM, B, K = 4, 16, 3, 7


@pytest.fixture(scope="module")
def pbmc_table():
    """A real 'pretrained' table: PCA gene loadings of scanpy's pbmc68k_reduced (the 309 genes
    that entered its PCA; the other 456 have NaN loadings and are dropped)."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    table = pd.DataFrame(adata.varm["PCs"][:, :12], index=adata.var_names.astype(str))
    return table.dropna()


@pytest.fixture(scope="module")
def vocab(pbmc_table):
    """20 table genes (some lower-cased) + 10 genes the table lacks -> 2/3 coverage."""
    genes = list(pbmc_table.index[:20])
    genes[3] = genes[3].lower()  # matched case-insensitively
    return genes + [f"NOT_A_GENE_{i}" for i in range(10)]


def _gene_kwargs(name, pbmc_table, vocab):
    return (
        dict(table=pbmc_table, vocab_genes=vocab, n_special=N_SPECIAL)
        if name == "pretrained"
        else {}
    )


def _values(seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(B, K, generator=g) * 8
    v[:, 0] = 0.0  # zeros present
    return v


@pytest.mark.parametrize("name", GENE_ENCODERS.names())
def test_gene_encoders_shape_grad(name, pbmc_table, vocab):
    n_tokens = N_SPECIAL + len(vocab)
    enc = GENE_ENCODERS.get(name)(n_tokens, DIM, **_gene_kwargs(name, pbmc_table, vocab))
    ids = torch.randint(N_SPECIAL, n_tokens, (B, K))
    out = enc(ids)
    assert out.shape == (B, K, DIM) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert enc.gene_table().shape == (n_tokens, DIM)


@pytest.mark.parametrize("name", EXPRESSION_ENCODERS.names())
def test_expression_encoders_shape_grad(name):
    cls = EXPRESSION_ENCODERS.get(name)
    enc = cls(DIM)
    v = _values().requires_grad_(True)
    out = enc(v)
    width = cls.out_dim if getattr(cls, "concat", False) else DIM
    assert out.shape == (B, K, width) and torch.isfinite(out).all()
    out.square().sum().backward()
    params = list(enc.parameters())
    if params:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    if name in ("concat", "mlp", "soft_bin", "periodic"):  # differentiable in the value itself
        assert v.grad is not None and v.grad.abs().sum() > 0


@pytest.mark.parametrize("expr", EXPRESSION_ENCODERS.names())
@pytest.mark.parametrize("gene", GENE_ENCODERS.names())
def test_token_embedding_every_combination(gene, expr, pbmc_table, vocab):
    n_tokens = N_SPECIAL + len(vocab)
    emb = TokenEmbedding(
        n_tokens, DIM, gene, expr, gene_kwargs=_gene_kwargs(gene, pbmc_table, vocab)
    )
    ids = torch.randint(N_SPECIAL, n_tokens, (B, K))
    out = emb(ids, _values())
    assert out.shape == (B, K, DIM) and torch.isfinite(out).all()
    if expr == "concat":  # TxFM: [E_i ; x_i]
        torch.testing.assert_close(out[..., -1], _values())
        torch.testing.assert_close(out[..., :-1], emb.gene(ids))
    else:  # gene + expression
        torch.testing.assert_close(out, emb.gene(ids) + emb.expression(_values()))


@pytest.mark.parametrize("name", [n for n in EXPRESSION_ENCODERS.names() if n != "concat"])
def test_zero_token(name):
    enc = EXPRESSION_ENCODERS.get(name)(DIM, zero_token=True)
    v = _values()
    out = enc(v)
    for r in range(B):
        torch.testing.assert_close(out[r, 0], enc.zero)  # every zero -> E_special
    plain = EXPRESSION_ENCODERS.get(name)(DIM)
    plain.load_state_dict({k: t for k, t in enc.state_dict().items() if k != "zero"})
    torch.testing.assert_close(out[:, 1:], plain(v)[:, 1:])  # nonzeros untouched


def test_log_bin_known_bins():
    enc = LogBinExpression(DIM, max_bin=5)
    counts = torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0, 7.0, 8.0, 1e6]])
    expected = torch.tensor([[0, 0, 1, 1, 2, 3, 3, 5]])  # min(floor(log2(c + 1)), 5)
    assert torch.equal(enc.bins(torch.log1p(counts)), expected)
    assert torch.equal(LogBinExpression(DIM, max_bin=5, input="counts").bins(counts), expected)
    torch.testing.assert_close(enc(torch.log1p(counts))[0, 4], enc.embedding.weight[2])


def test_hard_bin_edges_and_quantiles():
    enc = HardBinExpression(DIM, n_bins=4, edges=[1.0, 2.0])
    v = torch.tensor([[0.0, 0.5, 1.0, 1.5, 2.0, 9.0]])
    assert torch.equal(enc.bins(v), torch.tensor([[0, 1, 2, 2, 3, 3]]))
    q = HardBinExpression(DIM, n_bins=5)  # 4 quantile bins for nonzero values
    v = torch.tensor([[0.0, 4.0, 3.0, 2.0, 1.0, 0.0, 3.0, 5.0, 6.0]])
    # nonzero sorted: 1,2,3,3,4,5,6 (n=7); rank r = #nonzero below -> 1 + floor(4 r / 7)
    ranks = torch.tensor([[0, 4, 2, 1, 0, 0, 2, 5, 6]])
    expected = torch.where(v > 0, 1 + (4 * ranks) // 7, 0)
    assert torch.equal(q.bins(v), expected)
    # numpy reference on random rows
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(5, 50)).astype(np.float32)
    got = q.bins(torch.from_numpy(x)).numpy()
    for r in range(5):
        nz = np.sort(x[r][x[r] > 0])
        ref = np.where(
            x[r] > 0, 1 + (4 * np.searchsorted(nz, x[r], side="left")) // max(len(nz), 1), 0
        )
        np.testing.assert_array_equal(got[r], ref)


def test_soft_bin_is_convex_combination():
    enc = SoftBinExpression(DIM, n_bins=6)
    v = _values()
    w = enc.weights(v)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, K))
    torch.testing.assert_close(enc(v), w @ enc.table)
    a = torch.softmax(enc.w2(torch.nn.functional.leaky_relu(enc.w1(v[..., None]), 0.1)), -1)
    torch.testing.assert_close(w, a)


def test_periodic_features():
    enc = PeriodicExpression(DIM, n_freq=3)
    v = torch.tensor([[0.25, 1.0]])
    f = enc.features(v)
    c = enc.freq.detach()
    torch.testing.assert_close(f[0, 0, :3], torch.sin(2 * math.pi * c * 0.25))
    torch.testing.assert_close(f[0, 1, 3:], torch.cos(2 * math.pi * c * 1.0))


def test_pretrained_partial_coverage(pbmc_table, vocab, tmp_path, caplog):
    n_tokens = N_SPECIAL + len(vocab)
    path = tmp_path / "genes.tsv"
    pbmc_table.iloc[:200].to_csv(path, sep="\t")
    with caplog.at_level(logging.INFO, logger="tfmkit"):
        enc = PretrainedGeneEncoder(n_tokens, DIM, table_path=str(path), vocab_genes=vocab)
    assert "20/30" in caplog.text
    assert enc.coverage["n_covered"] == 20 and enc.coverage["fraction"] == pytest.approx(2 / 3)
    assert enc.coverage["missing_examples"][0] == "NOT_A_GENE_0"
    covered = torch.zeros(n_tokens, dtype=torch.bool)
    covered[N_SPECIAL : N_SPECIAL + 20] = True
    assert torch.equal(enc.covered, covered)
    # covered tokens: MLP(table row) of the right gene (case-insensitive match for vocab[3])
    tok = torch.tensor([[N_SPECIAL + 3, N_SPECIAL + 25, 0]])
    out = enc(tok)
    row = torch.tensor(pbmc_table.iloc[3].to_numpy(), dtype=torch.float32)
    torch.testing.assert_close(out[0, 0], enc.mlp(row))
    torch.testing.assert_close(
        out[0, 1], enc.fallback.embedding.weight[N_SPECIAL + 25]
    )  # learned row
    assert torch.all(out[0, 2] == 0)  # PAD
    # CSV gives the same table; the buffer travels in the state dict
    csv = tmp_path / "genes.csv"
    pbmc_table.iloc[:200].to_csv(csv)
    again = PretrainedGeneEncoder(n_tokens, DIM, table_path=str(csv), vocab_genes=vocab)
    torch.testing.assert_close(again.table, enc.table)
    restored = PretrainedGeneEncoder(n_tokens, DIM, table_dim=12)
    restored.load_state_dict(enc.state_dict())
    torch.testing.assert_close(restored(tok), out)


def test_pretrained_and_encoder_errors(pbmc_table, vocab, tmp_path):
    n_tokens = N_SPECIAL + len(vocab)
    with pytest.raises(TfmkitError, match="does not exist"):
        load_gene_table(tmp_path / "missing.csv")
    bad = tmp_path / "genes.xlsx"
    bad.write_text("x")
    with pytest.raises(TfmkitError, match="format"):
        load_gene_table(bad)
    txt = tmp_path / "bad.csv"
    pd.DataFrame({"gene": ["A", "B"], "v": ["x", "y"]}).to_csv(txt, index=False)
    with pytest.raises(TfmkitError, match="numeric"):
        load_gene_table(txt)
    dup = tmp_path / "dup.csv"
    pd.DataFrame({"v": [1.0, 2.0]}, index=["A", "A"]).to_csv(dup)
    with pytest.raises(TfmkitError, match="duplicated"):
        load_gene_table(dup)
    nan_table = pbmc_table.copy()
    nan_table.iloc[0, 0] = np.nan
    with pytest.raises(TfmkitError, match="NaN"):
        PretrainedGeneEncoder(n_tokens, DIM, table=nan_table, vocab_genes=vocab)
    with pytest.raises(TfmkitError, match="vocab_genes"):
        PretrainedGeneEncoder(n_tokens, DIM, table=pbmc_table)
    with pytest.raises(TfmkitError, match="exceeds"):
        PretrainedGeneEncoder(5, DIM, table=pbmc_table, vocab_genes=vocab)
    with pytest.raises(TfmkitError, match="none of the"):
        PretrainedGeneEncoder(
            n_tokens, DIM, table=pbmc_table, vocab_genes=[f"ENSG{i}" for i in range(30)]
        )
    with pytest.raises(TfmkitError, match="table_path"):
        PretrainedGeneEncoder(n_tokens, DIM)
    with pytest.raises(TfmkitError, match="unknown expression encoder"):
        TokenEmbedding(n_tokens, DIM, "learned", "nope")
    with pytest.raises(TfmkitError, match="bad options"):
        TokenEmbedding(n_tokens, DIM, "learned", "mlp", expression_kwargs={"n_bins": 3})
    with pytest.raises(TfmkitError, match="edges"):
        HardBinExpression(DIM, n_bins=4, edges=[2.0, 1.0])
