"""Gene-annotation LDA probe (GPL Suppl. G): planted classes recovered, shuffled control and
random vectors on the shipped GO compartments at chance, numbers equal a hand-written CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.gene_lda import lda_probe


def _planted(seed=0, per_class=40, dim=12):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(3, dim))
    y = np.repeat(["nucleus", "cytosol", "membrane"], per_class)
    X = centers[np.repeat(np.arange(3), per_class)] + rng.normal(size=(3 * per_class, dim))
    genes = [f"G{i}" for i in range(len(y))]
    return pd.DataFrame(X, index=genes), pd.Series(y, index=genes)


def test_planted_classes_recovered_and_shuffled_control_at_chance():
    rep, labels = _planted()
    res = lda_probe(rep, labels)
    assert res["balanced_accuracy"] > 0.95 and res["n_classes"] == 3 and res["chance"] == pytest.approx(1 / 3)
    shuffled = [lda_probe(rep, labels, shuffle=True, seed=s)["balanced_accuracy"] for s in range(5)]
    assert abs(np.mean(shuffled) - 1 / 3) < 0.1


def test_equals_a_hand_written_cross_validation():
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    rep, labels = _planted(seed=3)
    labels = pd.concat([labels, pd.Series(["rare"] * 3, index=["X1", "X2", "X3"])])  # dropped: < 5 genes
    X, y = rep.to_numpy(), labels.loc[rep.index].to_numpy()
    scores = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        sc = StandardScaler().fit(X[tr])
        pca = PCA(12, random_state=0).fit(sc.transform(X[tr]))
        lda = LinearDiscriminantAnalysis().fit(pca.transform(sc.transform(X[tr])), y[tr])
        scores.append(balanced_accuracy_score(y[te], lda.predict(pca.transform(sc.transform(X[te])))))
    res = lda_probe(rep, labels)
    assert res["balanced_accuracy"] == pytest.approx(np.mean(scores))
    assert res["std"] == pytest.approx(np.std(scores, ddof=1)) and res["n_genes"] == 120


def test_shipped_go_compartments_random_vectors_sit_at_chance():
    from tfmkit.datasets.genesets import load_gene_annotation

    labels = load_gene_annotation("go_cc")
    assert labels.index.is_unique and labels.nunique() == 11 and len(labels) > 8000
    genes = labels.index[np.random.default_rng(0).permutation(len(labels))[:3000]]
    rep = pd.DataFrame(np.random.default_rng(1).normal(size=(len(genes), 16)), index=genes)
    res = lda_probe(rep, labels)
    assert abs(res["balanced_accuracy"] - res["chance"]) < 0.03


def test_errors():
    rep, labels = _planted()
    with pytest.raises(TfmkitError, match="only 1 annotation class"):
        lda_probe(rep, pd.Series("nucleus", index=rep.index))
    with pytest.raises(TfmkitError, match="n_folds must be at least 2"):
        lda_probe(rep, labels, n_folds=1)
