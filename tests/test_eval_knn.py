"""kNN label transfer: one set of CV predictions, both summaries equal to scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate
from sklearn.neighbors import KNeighborsClassifier

from tfmkit.errors import TfmkitError
from tfmkit.evaluation.knn import benchmark_knn, knn_cv_scores


def _data(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.choice(["a", "b", "c", "d"], n)
    X = (np.searchsorted(["a", "b", "c", "d"], y)[:, None] == np.arange(4)) * 1.5 + rng.normal(size=(n, 4))
    return X.astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 3])
def test_scores_match_cross_validate_and_cross_val_predict(seed):
    X, y = _data(seed)
    res = knn_cv_scores(X, y, seed=seed)
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    ref = cross_validate(KNeighborsClassifier(n_neighbors=10), X, y, cv=cv, scoring=("accuracy", "f1_macro"))
    np.testing.assert_allclose(res["fold_accuracy"], ref["test_accuracy"])
    np.testing.assert_allclose(res["fold_macro_f1"], ref["test_f1_macro"])
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=10), X, y, cv=cv)
    assert res["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert res["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert res["n"] == len(y) and 0.5 < res["accuracy"] < 1.0


def test_benchmark_knn_rows_and_shuffle_control():
    X, y = _data(1)
    df = benchmark_knn({"model": X, "noise": np.random.default_rng(0).normal(size=X.shape)}, y,
                       seed=1, shuffle_control="model")
    assert list(df.embedding.unique()) == ["model", "noise", "random_label_shuffle"]
    assert set(df.task) == {"knn_5fold"} and set(df.metric) == {"accuracy", "macro_f1"}
    acc = df[df.metric == "accuracy"].set_index("embedding")
    ref = cross_validate(KNeighborsClassifier(n_neighbors=10), X, y,
                         cv=StratifiedKFold(5, shuffle=True, random_state=1), scoring="accuracy")
    assert acc.loc["model", "value"] == pytest.approx(ref["test_score"].mean())
    assert acc.loc["model", "std"] == pytest.approx(ref["test_score"].std())
    assert acc.loc["random_label_shuffle", "value"] < acc.loc["model", "value"] - 0.2
    pooled = benchmark_knn({"model": X}, y, seed=1, pooled=True)
    assert pooled.value.iloc[0] == pytest.approx(knn_cv_scores(X, y, seed=1)["accuracy"])
    assert (pooled.n == len(y)).all()


def test_knn_errors():
    X, y = _data()
    with pytest.raises(TfmkitError, match="at least two labels with ≥ 5 cells"):
        knn_cv_scores(X[:10], np.array(["a"] * 7 + ["b"] * 3))
    with pytest.raises(TfmkitError, match="one label per cell"):
        knn_cv_scores(X, y[:-1])
    with pytest.raises(TfmkitError, match="shuffle control 'x' is not one of the embeddings"):
        benchmark_knn({"model": X}, y, shuffle_control="x")
