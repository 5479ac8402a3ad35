"""Closed-form ridge regression from per-group sufficient statistics.

The linear probe (one-vs-rest least-squares classifier) and the invertibility decoder both fit
``min_W ||Y - 1 b^T - X W||^2 + alpha ||W||^2`` on all batches but the held-out ones. Storing
``n_g``, ``sum x``, ``X_g^T X_g`` and ``X_g^T Y_g`` per group makes every leave-batches-out fit
one ``D x D`` Cholesky solve instead of a pass over the cells, so a 5,000-dimensional count
baseline costs one Gram matrix per post-processing, not one per seed (written here because
sklearn's ``Ridge`` cannot reuse a Gram matrix across training subsets; tested against
``sklearn.linear_model.Ridge``). When the training set has fewer cells than features the
equivalent dual form ``W = X_c^T (X_c X_c^T + alpha I)^{-1} Y_c`` is used instead.

With training means ``mu_x``, ``mu_y`` and ``G_c = X^T X - n mu_x mu_x^T``:
``W = (G_c + alpha I)^{-1} (X^T Y - n mu_x mu_y^T)``, ``b = mu_y - W^T mu_x`` and
``alpha = rel_alpha * trace(G_c) / D`` (scale-free).

Statistics are kept per *group*; :func:`group_codes` makes one group per (batch, is-control)
pair so the probe (perturbed cells only) and the decoder (all cells) share one pass.

Factorisations run under :func:`lapack_threads` (single-threaded LAPACK): on the 2-core
machines this project targets, multi-threaded OpenBLAS Cholesky/eigh/SVD were measured 3-10x
slower than single-threaded ones, while matrix products keep all threads.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from tfmkit.errors import TfmkitError


def lapack_threads():
    """Context manager limiting BLAS threads during factorisations (``TFMKIT_LAPACK_THREADS``,
    default 1; ``0`` leaves the thread count alone)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    n = int(os.environ.get("TFMKIT_LAPACK_THREADS", "1"))
    return nullcontext() if n <= 0 else threadpool_limits(limits=n, user_api="blas")


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
    """Per-group statistics of ``X`` ``(N, D)`` (``groups``: any label per cell, e.g.
    :func:`group_codes`); add targets with :meth:`add_target`, then :meth:`fit` on a subset."""

    def __init__(self, X, groups, *, rel_alpha: float = 1e-2):
        X = np.asarray(X, dtype=np.float32)
        self.groups = np.asarray(groups)
        self.rel_alpha = rel_alpha
        self.X = X
        self._rows = {g: np.flatnonzero(self.groups == g) for g in np.unique(self.groups)}
        self._n = {g: len(r) for g, r in self._rows.items()}
        self._sx = {g: X[r].sum(axis=0, dtype=np.float64) for g, r in self._rows.items()}
        self.dual = len(X) < X.shape[1]  # fewer cells than features: kernel form
        self._gram = {} if self.dual else {g: X[r].T @ X[r] for g, r in self._rows.items()}  # (D, D)
        self._y: dict[str, object] = {}
        self._xty: dict[str, dict] = {}
        self._sy: dict[str, dict] = {}
        self._chol: dict[frozenset, tuple] = {}

    def add_target(self, name: str, Y) -> None:
        """Register a target ``Y`` ``(N, T)`` (dense array or scipy sparse)."""
        self._y[name] = Y
        self._xty[name], self._sy[name] = {}, {}
        for g, r in self._rows.items():
            Yg = Y[r]
            if sp.issparse(Yg):
                self._sy[name][g] = np.asarray(Yg.sum(axis=0), dtype=np.float64).ravel()
                if not self.dual:
                    self._xty[name][g] = np.asarray((Yg.T @ self.X[r]).T, dtype=np.float64)  # (D, T)
            else:
                Yg = np.asarray(Yg, dtype=np.float32)
                self._sy[name][g] = Yg.sum(axis=0, dtype=np.float64)
                if not self.dual:
                    self._xty[name][g] = (self.X[r].T @ Yg).astype(np.float64)  # (D, T)

    def _factor(self, train: frozenset):
        if train not in self._chol:
            n = sum(self._n[g] for g in train)
            if n == 0:
                raise TfmkitError("ridge fit has no training cells (every batch held out)")
            mu = sum(self._sx[g] for g in train) / n
            if self.dual:
                rows = np.concatenate([self._rows[g] for g in sorted(train)])
                Xc = self.X[rows] - mu.astype(np.float32)
                G = (Xc @ Xc.T).astype(np.float64)  # (n, n)
            else:
                rows, G = None, -n * np.outer(mu, mu)
                for g in train:
                    G += self._gram[g]
            alpha = self.rel_alpha * max(np.trace(G) / self.X.shape[1], 1e-12)
            G[np.diag_indices_from(G)] += alpha
            if len(G) > 1024:  # float32 Cholesky halves the cost; alpha bounds the condition number
                G = G.astype(np.float32)
            with lapack_threads():
                self._chol[train] = (la.cho_factor(G, check_finite=False), mu, n, rows)
        return self._chol[train]

    def fit(self, name: str, train_groups) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``W`` ``(D, T)`` and intercept ``b`` ``(T,)`` fit on ``train_groups``."""
        train = frozenset(g for g in train_groups if g in self._n)
        cho, mu, n, rows = self._factor(train)
        muy = sum(self._sy[name][g] for g in train) / n
        with lapack_threads():
            if self.dual:
                Y = self._y[name][rows]
                Y = np.asarray(Y.toarray() if sp.issparse(Y) else Y, dtype=np.float64) - muy
                A = la.cho_solve(cho, Y.astype(cho[0].dtype), check_finite=False)  # (n, T)
                W = (self.X[rows] - mu.astype(np.float32)).T.astype(np.float64) @ A
            else:
                rhs = sum(self._xty[name][g] for g in train) - n * np.outer(mu, muy)
                W = la.cho_solve(cho, rhs.astype(cho[0].dtype), check_finite=False)
        return W.astype(np.float32), (muy - mu @ W).astype(np.float32)

    def predict(self, name: str, train_groups, rows) -> np.ndarray:
        """Predictions ``(len(rows), T)`` for cells ``rows`` of a fit on ``train_groups``."""
        W, b = self.fit(name, train_groups)
        return self.X[rows] @ W + b
