"""Linear discriminant probe of a gene annotation from gene representations (GPL Suppl. G).

For genes with one label each (e.g. a GO cellular compartment,
:func:`tfmkit.datasets.genesets.load_gene_annotation`) and a gene representation ``E``:
standardise, PCA to at most 256 components (GPL Suppl. G's dimensionality correction), then
``sklearn.discriminant_analysis.LinearDiscriminantAnalysis``, scored by **balanced accuracy**
in stratified 5-fold cross-validation (the scaler and PCA are fit inside each training fold).
Chance level is ``1 / n_classes``. The shuffled-embedding control (``shuffle=True``) permutes
which gene gets which vector, keeping the embedding's distribution and destroying gene identity;
it should sit at chance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmkit.errors import TfmkitError

N_FOLDS = 5
MAX_COMPONENTS = 256


def lda_probe(representation: pd.DataFrame, labels: pd.Series, *, n_folds: int = N_FOLDS,
              max_components: int = MAX_COMPONENTS, shuffle: bool = False, seed: int = 0) -> dict:
    """Cross-validated LDA balanced accuracy of ``labels`` (Series indexed by gene) from
    ``representation`` (``genes x dims`` DataFrame) on the genes both hold; classes with fewer
    than ``n_folds`` genes are dropped. Returns ``balanced_accuracy`` (mean over folds), ``std``
    (over folds), ``chance`` (``1 / n_classes``), ``n_genes``, ``n_classes``."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if n_folds < 2:
        raise TfmkitError(f"n_folds must be at least 2, got {n_folds}")
    idx = pd.Index([str(g) for g in representation.index])
    if idx.has_duplicates:
        raise TfmkitError("the gene representation has duplicated gene names; aggregate them first")
    lab = labels[~labels.index.duplicated(keep=False)]
    common = idx.intersection(pd.Index(lab.index.astype(str)), sort=False)
    y = lab.loc[common].astype(str).to_numpy()
    counts = pd.Series(y).value_counts()
    ok = np.isin(y, counts[counts >= n_folds].index)
    common, y = common[ok], y[ok]
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise TfmkitError(f"only {n_classes} annotation class(es) with >= {n_folds} genes among the "
                          f"{len(common)} annotated genes of the representation; the LDA probe needs 2")
    X = representation.set_axis(idx).loc[common].to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        raise TfmkitError("the gene representation contains NaN or infinite values")
    if shuffle:
        X = X[np.random.default_rng(seed).permutation(len(X))]
    k = int(min(max_components, X.shape[1], len(X) * (n_folds - 1) // n_folds - 1))
    model = make_pipeline(StandardScaler(), PCA(k, random_state=seed), LinearDiscriminantAnalysis())
    cv = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(model, X, y, cv=cv, scoring="balanced_accuracy")
    return {"balanced_accuracy": float(scores.mean()), "std": float(scores.std(ddof=1)),
            "chance": 1.0 / n_classes, "n_genes": int(len(y)), "n_classes": int(n_classes)}
