"""Closed-form ridge regression from per-batch sufficient statistics.

The linear probe (one-vs-rest least-squares classifier) and the invertibility decoder both fit
``min_W ||Y - 1 b^T - X W||^2 + alpha ||W||^2`` on all batches but the held-out ones. Storing
``n_b``, ``sum x``, ``X_b^T X_b`` and ``X_b^T Y_b`` per batch makes every leave-batches-out fit
one ``D x D`` Cholesky solve instead of a pass over the cells, so a 5,000-dimensional count
baseline costs one Gram matrix per post-processing, not one per seed (written here because
sklearn's ``Ridge`` has no way to reuse the Gram matrix across training subsets; tested against
``sklearn.linear_model.Ridge``).

With training means ``mu_x``, ``mu_y`` and ``G_c = X^T X - n mu_x mu_x^T``:
``W = (G_c + alpha I)^{-1} (X^T Y - n mu_x mu_y^T)``, ``b = mu_y - W^T mu_x`` and
``alpha = rel_alpha * trace(G_c) / D`` (scale-free).

Statistics are kept per *group*; :func:`group_codes` makes one group per (batch, is-control)
pair so the probe (perturbed cells only) and the decoder (all cells) share one pass.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la

from tfmkit.errors import TfmkitError


def group_codes(batches, is_control=None) -> np.ndarray:
    """Integer group per cell: ``2 * index(batch) + is_control`` (batches in sorted order)."""
    batches = np.asarray(batches)
    levels = np.unique(batches)
    ctrl = np.zeros(len(batches), int) if is_control is None else np.asarray(is_control, bool).astype(int)
    return 2 * np.searchsorted(levels, batches) + ctrl


def batch_groups(batches, chosen, *, controls: bool = True) -> list[int]:
    """Group codes (see :func:`group_codes`) of the batches in ``chosen``; with
    ``controls=False`` only the perturbed-cell groups."""
    levels = list(np.unique(np.asarray(batches)))
    out = []
    for b in chosen:
        k = levels.index(b)
        out += [2 * k, 2 * k + 1] if controls else [2 * k]
    return out


class BatchRidge:
    """Per-group statistics of ``X`` ``(N, D)`` (``batches``: any group label per cell, e.g.
    :func:`group_codes`); add targets with :meth:`add_target`, then :meth:`fit` on a subset."""

    def __init__(self, X, batches, *, rel_alpha: float = 1e-2):
        X = np.asarray(X, dtype=np.float32)
        self.batches = np.asarray(batches)
        self.levels = list(np.unique(self.batches))
        self.rel_alpha = rel_alpha
        self.X = X
        self._rows = {b: np.flatnonzero(self.batches == b) for b in self.levels}
        self._n = {b: len(r) for b, r in self._rows.items()}
        self._sx = {b: X[r].sum(axis=0, dtype=np.float64) for b, r in self._rows.items()}
        self._gram = {b: X[r].T @ X[r] for b, r in self._rows.items()}  # (D, D) float32
        self._xty: dict[str, dict] = {}
        self._sy: dict[str, dict] = {}
        self._chol: dict[frozenset, tuple] = {}

    def add_target(self, name: str, Y) -> None:
        """Register a target ``Y`` ``(N, T)`` (dense array or scipy sparse)."""
        import scipy.sparse as sp

        self._xty[name], self._sy[name] = {}, {}
        for b, r in self._rows.items():
            Yb = Y[r]
            if sp.issparse(Yb):
                self._xty[name][b] = np.asarray((Yb.T @ self.X[r]).T, dtype=np.float64)  # (D, T)
                self._sy[name][b] = np.asarray(Yb.sum(axis=0), dtype=np.float64).ravel()
            else:
                Yb = np.asarray(Yb, dtype=np.float32)
                self._xty[name][b] = (self.X[r].T @ Yb).astype(np.float64)  # (D, T)
                self._sy[name][b] = Yb.sum(axis=0, dtype=np.float64)

    def _factor(self, train: frozenset):
        if train not in self._chol:
            n = sum(self._n[b] for b in train)
            if n == 0:
                raise TfmkitError("ridge fit has no training cells (every batch held out)")
            mu = sum(self._sx[b] for b in train) / n
            G = -n * np.outer(mu, mu)
            for b in train:
                G += self._gram[b]
            alpha = self.rel_alpha * max(np.trace(G) / len(G), 1e-12)
            G[np.diag_indices_from(G)] += alpha
            if len(G) > 1024:  # float32 Cholesky halves the cost; alpha bounds the condition number
                G = G.astype(np.float32)
            self._chol[train] = (la.cho_factor(G, check_finite=False), mu, n)
        return self._chol[train]

    def fit(self, name: str, train_batches) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``W`` ``(D, T)`` and intercept ``b`` ``(T,)`` fit on ``train_batches``."""
        train = frozenset(b for b in train_batches if b in self._n)
        cho, mu, n = self._factor(train)
        muy = sum(self._sy[name][b] for b in train) / n
        rhs = sum(self._xty[name][b] for b in train) - n * np.outer(mu, muy)
        W = la.cho_solve(cho, rhs.astype(cho[0].dtype), check_finite=False)
        return W.astype(np.float32), (muy - mu @ W).astype(np.float32)

    def predict(self, name: str, train_batches, rows) -> np.ndarray:
        """Predictions ``(len(rows), T)`` for cells ``rows`` of a fit on ``train_batches``."""
        W, b = self.fit(name, train_batches)
        return self.X[rows] @ W + b
