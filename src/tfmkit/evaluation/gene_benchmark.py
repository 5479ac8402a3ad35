"""Gene-level benchmark runner (``tfmkit benchmark genes``): the gene representations of a model
(its gene tables, PCA loadings, a gene-name shuffle) scored by gene-pair recall (TxFM §B.3),
GRN AUROC with a co-expression baseline and an LDA annotation probe (GPL §2.3, Suppl. F-G).
Re-exported by :mod:`tfmkit.evaluation.runners`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import baselines as B
from tfmkit.evaluation.inputs import counts_matrix
from tfmkit.evaluation.report import LONG_COLUMNS


def gene_representations(model, *, adata=None, layer: str | None = None, pca_components: int = 128,
                         shuffle: bool = True, seed: int = 0) -> dict[str, tuple[pd.DataFrame, int | None]]:
    """``{name: (genes × dims DataFrame, PCA components for recall)}`` for a model: every gene
    table of :func:`tfmkit.inference.gene_embeddings` (TxFM / GPL-AR: ``encoder`` (32 comps for
    recall) and ``decoder`` (256); BMFM: ``encoder``, ``mlm_gene``, ``wced_*`` (no PCA));
    ``pca<N>``: gene loadings of an ``N``-component PCA of lognorm ``adata`` over the model's
    genes (if ``adata`` is given); ``random_label_shuffle``: the first table (``encoder`` when
    present) with gene names permuted (chance control)."""
    from tfmkit import inference

    from tfmkit.evaluation.gene_recall import PCA_COMPONENTS

    bm = inference.as_trained_model(model)
    kinds = sorted(bm.module.gene_tables(), key=lambda k: (k != "encoder", k != "decoder", k))
    if not kinds:
        raise TfmkitError(f"model family {bm.family!r} exports no gene table; gene benchmarks need one")
    reps = {k: (inference.gene_embeddings(bm, kind=k), PCA_COMPONENTS.get(k)) for k in kinds}
    first = reps[kinds[0]][0]
    if adata is not None:
        loadings = pca_loadings(adata, first.index, n_components=pca_components,
                                layer=layer, seed=seed)
        reps[f"pca{loadings.shape[1]}"] = (loadings, None)
    if shuffle:
        perm = np.random.default_rng(seed).permutation(len(first))
        reps[B.RANDOM_LABEL_SHUFFLE] = (pd.DataFrame(first.to_numpy()[perm], index=first.index),
                                        reps[kinds[0]][1])
    return reps


def _harmonised_columns(var: pd.DataFrame, names: pd.Index) -> dict[str, int]:
    """``{HGNC symbol: column}`` of a gene table, harmonised as everywhere in tfmkit
    (:func:`tfmkit.data.hgnc.harmonize_genes`: symbols, Ensembl ids in ``var_names`` or
    ``var['gene_ids']``, previous symbols, aliases; the first of duplicates kept)."""
    import anndata as ad

    from tfmkit.data.hgnc import harmonize_genes

    if "hgnc_status" in var:  # already harmonised (e.g. the bundled data)
        return {g: i for i, g in reversed(list(enumerate(names)))}
    tmp = ad.AnnData(X=sp.csr_matrix((0, len(names)), dtype=np.float32),
                     var=pd.DataFrame({"column": np.arange(len(names))}, index=names))
    if "gene_ids" in var:
        tmp.var["gene_ids"] = var["gene_ids"].astype(str).to_numpy()
    harmonize_genes(tmp)
    return dict(zip(tmp.var_names.astype(str), tmp.var["column"].to_numpy()))


def _lognorm_genes(adata, genes, *, layer: str | None = None, why: str = "") -> tuple:
    """``(lognorm cells × kept genes, kept genes)`` of ``adata`` restricted to the ``genes`` it
    holds after HGNC harmonisation (Ensembl-id ``var_names`` match the model's symbols)."""
    from tfmkit.data.normalize import lognorm

    counts, names = counts_matrix(adata, layer, why=why)
    var = adata.raw.var if (layer == "raw" and layer not in adata.layers) else adata.var
    column = _harmonised_columns(var, names)
    keep = [g for g in genes if g in column]
    if len(keep) < 3:
        raise TfmkitError(f"only {len(keep)} of the model's {len(genes)} genes are in the data "
                          f"after HGNC harmonisation (data genes e.g. {', '.join(names[:3])}); use "
                          "HGNC symbols or Ensembl ids in var_names / var['gene_ids']")
    L = lognorm(counts[:, [column[g] for g in keep]])
    return (L.toarray() if sp.issparse(L) else np.asarray(L)), keep


def pca_loadings(adata, genes, *, n_components: int = 128, layer: str | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """Gene loadings ``(genes, k)`` of a PCA of the lognorm counts of ``adata`` restricted to
    the ``genes`` it holds (the PCA baseline's gene representation). The data's genes are
    HGNC-harmonised first, so Ensembl-id ``var_names`` match the model's symbols."""
    from sklearn.decomposition import PCA

    L, keep = _lognorm_genes(adata, genes, layer=layer, why="the PCA baseline needs them")
    k = int(min(n_components, L.shape[0] - 1, L.shape[1] - 1))
    pca = PCA(k, random_state=seed).fit(L)
    return pd.DataFrame(pca.components_.T, index=pd.Index(keep, name="gene"),
                        columns=[f"pc{i}" for i in range(k)])


GENE_TASKS = ("recall", "grn", "lda")
MAX_COEXPRESSION_CELLS = 20_000
#: Cells of ``adata`` used by default for the PCA-loadings and co-expression baselines: both are
#: per-gene population statistics (means, covariances), estimated well from 10,000 cells, and
#: the dense lognorm matrix they need stays ~0.7 GB for a 17k-gene model.
DEFAULT_MAX_CELLS = 10_000


def subsample_input(adata, max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0):
    """``adata`` itself, or a seeded uniform subsample of ``max_cells`` of its cells (announced
    on stderr; :func:`tfmkit.evaluation.subsample.subsample_cells`)."""
    from tfmkit.evaluation.subsample import report_subsample, subsample_cells

    keep = subsample_cells(adata.n_obs, max_cells, seed=seed)
    if len(keep) == adata.n_obs:
        return adata
    report_subsample(adata.n_obs, keep, seed, "benchmark genes")
    return adata[keep].copy()


def benchmark_genes(model=None, *, representations: dict | None = None, adata=None,
                    layer: str | None = None, databases=("corum", "hallmark", "canonical_pathways"),
                    tasks: Sequence[str] = ("recall",), tf_targets="chea2022", annotation="go_cc",
                    n_null_draws: int = 3, n_null_pairs: int = 100_000, seed: int = 0,
                    max_cells: int | None = DEFAULT_MAX_CELLS) -> pd.DataFrame:
    """Gene-level biology of a model's gene representations (TxFM §B.3; GPL §2.3, Suppl. F-G).

    ``model``: a model or model directory (its gene tables, :func:`gene_representations`,
    including the gene-name-shuffled control ``random_label_shuffle``); or pass
    ``representations`` ``{name: DataFrame or (DataFrame, n_pca_components)}`` directly.
    ``adata`` (raw counts) adds the PCA-loadings baseline and, for ``grn``, the co-expression
    baseline. ``tasks`` (any of :data:`GENE_TASKS`; default ``recall`` only, as before
    ``grn`` / ``lda`` existed; ``tfmkit benchmark genes`` runs all three):

    - ``recall`` — gene-gene relationship recall (:mod:`~tfmkit.evaluation.gene_recall`) of
      ``databases`` (names for :func:`tfmkit.datasets.genesets.load_gene_sets` or a
      ``{db: {set: genes}}`` dict); task ``gene_recall``, metric = database or ``combined``,
      ``std`` over null draws, ``n_pairs`` known pairs;
    - ``grn`` — per-TF AUROC of ``tf_targets`` (a :func:`~tfmkit.datasets.genesets.load_tf_targets`
      name or ``{tf: targets}``) from cosine similarity, inverted for repressors
      (:mod:`~tfmkit.evaluation.grn`); with ``adata`` also ``coexpression`` (Pearson across up to
      20,000 cells); task ``grn``, metrics ``grn_auroc`` / ``grn_auroc_cosine``, ``std`` over TFs,
      ``n_seeds`` = number of TFs, ``n_pairs`` = TF-target pairs scored;
    - ``lda`` — 5-fold LDA balanced accuracy of ``annotation`` (a
      :func:`~tfmkit.datasets.genesets.load_gene_annotation` name or a gene -> label Series;
      :mod:`~tfmkit.evaluation.gene_lda`); task ``gene_annotation``, metric
      ``lda_balanced_accuracy``, ``std`` over folds, ``n_pairs`` = genes scored.

    ``grn`` and ``lda`` score every representation (and the baseline) on the same genes: those
    all of them hold (and, with ``adata``, expressed in it). ``max_cells`` (default 10,000;
    ``None`` = all): the cells of ``adata`` used, a seeded (``seed``) uniform subsample
    (:func:`subsample_input`).
    """
    from tfmkit.evaluation.metric_registry import ensure_metric
    from tfmkit.evaluation.subsample import check_max_cells

    bad = [t for t in tasks if t not in GENE_TASKS]
    if bad or not tasks:
        raise TfmkitError(f"unknown gene task(s) {bad}; choose from {', '.join(GENE_TASKS)}")
    check_max_cells(max_cells)
    if adata is not None:
        adata = subsample_input(adata, max_cells, seed)
    if representations is None:
        if model is None:
            raise TfmkitError("benchmark_genes needs a model (or representations)")
        representations = gene_representations(model, adata=adata, layer=layer, seed=seed)
    reps = {n: (r if isinstance(r, tuple) else (r, None)) for n, r in representations.items()}
    rows: list[dict] = []
    if "recall" in tasks:
        from tfmkit.datasets.genesets import load_databases
        from tfmkit.evaluation import gene_recall as GR

        dbs = databases if isinstance(databases, dict) else load_databases(tuple(databases))
        for db in dbs:
            ensure_metric(str(db), task="gene_recall", higher_is_better=True,
                          description=f"recall of gene pairs of the user database {db!r} beyond the null")
        for name, (df, k) in reps.items():
            res = GR.gene_relationship_recall(df, dbs, n_components=k, n_null_draws=n_null_draws,
                                              n_null_pairs=n_null_pairs, seed=seed)
            rows += [{"embedding": name, "task": "gene_recall", "metric": r.database, "value": r.value,
                      "std": r.std, "n_seeds": r.n_seeds, "n_pairs": r.n_pairs}
                     for r in res.itertuples(index=False)]
    if "grn" in tasks or "lda" in tasks:
        genes, expression = _common_genes(reps, adata, layer, seed)
        if "grn" in tasks:
            rows += _grn_rows(reps, genes, expression, tf_targets)
        if "lda" in tasks:
            rows += _lda_rows(reps, genes, annotation, seed)
    return pd.DataFrame(rows, columns=LONG_COLUMNS + ["n_pairs"])


def _common_genes(reps: dict, adata, layer, seed) -> tuple[list[str], pd.DataFrame | None]:
    """Genes every representation holds (and ``adata`` expresses, non-constant), and the
    lognorm expression of those genes in up to :data:`MAX_COEXPRESSION_CELLS` cells."""
    names = [list(map(str, df.index)) for df, _ in reps.values()]
    common = set(names[0]).intersection(*names[1:]) if names else set()
    genes = [g for g in names[0] if g in common] if names else []
    if adata is None:
        return genes, None
    L, keep = _lognorm_genes(adata, genes, layer=layer, why="the co-expression baseline needs them")
    if L.shape[0] > MAX_COEXPRESSION_CELLS:
        L = L[np.sort(np.random.default_rng(seed).choice(L.shape[0], MAX_COEXPRESSION_CELLS, replace=False))]
    varies = L.std(0) > 0
    keep = [g for g, v in zip(keep, varies) if v]
    return keep, pd.DataFrame(L[:, varies], columns=keep)


def _grn_rows(reps, genes, expression, tf_targets) -> list[dict]:
    from tfmkit.datasets.genesets import load_tf_roles, load_tf_targets
    from tfmkit.evaluation import grn as GRN

    targets = load_tf_targets(tf_targets) if isinstance(tf_targets, str) else dict(tf_targets)
    roles = load_tf_roles() if isinstance(tf_targets, str) else {}
    sources = [(n, df.loc[genes], None) for n, (df, _) in reps.items()]
    if expression is not None:
        sources.append(("coexpression", None, expression))
    rows = []
    for name, rep, expr in sources:
        per_tf = GRN.grn_auroc(rep, targets, roles=roles, genes=genes, expression=expr)
        for metric, (mean, std, n_tfs) in GRN.grn_summary(per_tf).items():
            rows.append({"embedding": name, "task": "grn", "metric": metric, "value": mean, "std": std,
                         "n_seeds": n_tfs, "n_pairs": int(per_tf["n_targets"].sum())})
    return rows


def _lda_rows(reps, genes, annotation, seed) -> list[dict]:
    from tfmkit.datasets.genesets import load_gene_annotation
    from tfmkit.evaluation.gene_lda import N_FOLDS, lda_probe

    labels = load_gene_annotation(annotation) if isinstance(annotation, str) else annotation
    rows = []
    for name, (df, _) in reps.items():
        res = lda_probe(df.loc[genes], labels, seed=seed)
        rows.append({"embedding": name, "task": "gene_annotation", "metric": "lda_balanced_accuracy",
                     "value": res["balanced_accuracy"], "std": res["std"], "n_seeds": N_FOLDS,
                     "n_pairs": res["n_genes"]})
    return rows
