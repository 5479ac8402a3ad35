"""GRN AUROC (GPL §2.3, Suppl. F): planted truth recovered, inverted metric for repressors,
co-expression baseline, and chance level for random vectors on the shipped ChEA table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import grn as GRN


def _planted(seed=0, n_genes=200, dim=16, noise=0.3):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    E = rng.normal(size=(n_genes, dim))
    E[20:40] = E[0] + noise * rng.normal(size=(20, dim))  # targets of the activator G0
    E[40:60] = -E[1] + noise * rng.normal(size=(20, dim))  # targets of the repressor G1
    targets = {"G0": genes[20:40], "G1": genes[40:60], "G2": genes[100:120], "NOTHERE": genes[:10]}
    return pd.DataFrame(E, index=genes), targets


def _mann_whitney_auc(scores, y):
    pos, neg = scores[y], scores[~y]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def test_planted_targets_are_recovered_and_repressors_inverted():
    rep, targets = _planted()
    per_tf = GRN.grn_auroc(rep, targets, roles={"G1": "repressor"}).set_index("tf")
    assert list(per_tf.index) == ["G0", "G1", "G2"]  # NOTHERE is not a scored gene
    assert per_tf.loc["G0", "auroc"] > 0.99 and per_tf.loc["G0", "auroc_signed"] == per_tf.loc["G0", "auroc"]
    assert per_tf.loc["G1", "auroc"] < 0.01 and per_tf.loc["G1", "auroc_signed"] > 0.99
    assert abs(per_tf.loc["G2", "auroc"] - 0.5) < 0.2  # random targets: chance
    assert per_tf.loc["G0", "n_targets"] == 20 and per_tf.loc["G0", "n_genes"] == 199  # TF left out
    summary = GRN.grn_summary(per_tf.reset_index())
    assert summary["grn_auroc"][0] == pytest.approx(per_tf.auroc_signed.mean())
    assert summary["grn_auroc"][2] == 3 and summary["grn_auroc_cosine"][0] < summary["grn_auroc"][0]


def test_auroc_equals_brute_force_and_similarities_equal_references():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=60), 1)  # ties
    y = rng.random(60) < 0.3
    from sklearn.metrics import roc_auc_score

    assert GRN.tf_auroc(s, y) == pytest.approx(_mann_whitney_auc(s, y))
    assert GRN.tf_auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(GRN.tf_auroc(s, np.zeros(60, bool)))
    E = rng.normal(size=(30, 5))
    np.testing.assert_allclose(GRN.cosine_rows(E, [3, 7]), cosine_similarity(E)[[3, 7]], atol=1e-12)
    X = rng.normal(size=(50, 12))
    np.testing.assert_allclose(GRN.pearson_rows(X, [0, 5]), np.corrcoef(X.T)[[0, 5]], atol=1e-12)


def test_coexpression_baseline_on_planted_expression():
    rng = np.random.default_rng(2)
    genes = [f"G{i}" for i in range(80)]
    X = rng.normal(size=(300, 80))
    X[:, 10:25] += 2.0 * X[:, [0]]  # G0 drives G10..G24
    expr = pd.DataFrame(X, columns=genes)
    per_tf = GRN.grn_auroc(None, {"G0": genes[10:25]}, expression=expr)
    assert per_tf.auroc.iloc[0] > 0.99
    with pytest.raises(TfmkitError, match="needs a gene representation or an expression matrix"):
        GRN.grn_auroc(None, {"G0": genes[10:25]})
    with pytest.raises(TfmkitError, match="only 4 genes to score; GRN AUROC needs at least 10"):
        GRN.grn_auroc(expr.T, {"G0": genes[10:25]}, genes=genes[:4])


def test_shipped_chea_table_random_vectors_sit_at_chance():
    from tfmkit.datasets.genesets import load_tf_roles, load_tf_targets

    targets, roles = load_tf_targets("chea2022"), load_tf_roles()
    assert len(targets) == 174 and set(roles.values()) == {"activator", "repressor", "dual"}
    assert set(roles) <= set(targets) and len(targets["AR"]) > 1000
    universe = sorted({g for t in targets.values() for g in t} | set(targets))
    genes = list(np.random.default_rng(0).choice(universe, 3000, replace=False)) + list(targets)
    genes = list(dict.fromkeys(genes))
    rep = pd.DataFrame(np.random.default_rng(1).normal(size=(len(genes), 16)), index=genes)
    per_tf = GRN.grn_auroc(rep, targets, roles=roles)
    mean, _, n_tfs = GRN.grn_summary(per_tf)["grn_auroc"]
    assert n_tfs > 150 and abs(mean - 0.5) < 0.02
    with pytest.raises(TfmkitError, match="unknown TF-target table 'encode'"):
        load_tf_targets("encode")
