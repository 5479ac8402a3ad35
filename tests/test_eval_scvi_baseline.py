"""The scVI baseline (optional extra `tfmkit[baselines]`, installed by CI)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import GENES, make_counts
from tfmkit.errors import TfmkitError
from tfmkit.evaluation import scvi_baseline


def test_scvi_separates_planted_types():
    pytest.importorskip("scvi", reason="optional extra: pip install 'tfmkit[baselines]' (CI installs it)")
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    a = make_counts(150, GENES, seed=0)
    Z = scvi_baseline.scvi_embedding(a.X, batches=a.obs["batch"], max_epochs=30, seed=0)
    assert Z.shape == (150, scvi_baseline.N_LATENT) and np.isfinite(Z).all()
    acc = cross_val_score(KNeighborsClassifier(10), Z, a.obs["cell_type"].astype(str), cv=3).mean()
    assert acc > 0.8  # three planted types, chance ~0.33


def test_missing_scvi_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(scvi_baseline, "scvi_available", lambda: False)
    with pytest.raises(TfmkitError, match=r"needs scvi-tools: pip install 'tfmkit\[baselines\]'"):
        scvi_baseline.scvi_embedding(np.ones((3, 3)))


def test_scvi_is_a_named_baseline():
    pytest.importorskip("scvi", reason="optional extra: pip install 'tfmkit[baselines]' (CI installs it)")
    from tfmkit.evaluation.baselines import baseline_embedding

    a = make_counts(60, GENES, seed=1)
    Z = baseline_embedding(a.X, "scvi", seed=0)
    assert Z.shape == (60, scvi_baseline.N_LATENT)
