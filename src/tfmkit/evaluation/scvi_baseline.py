"""The scVI baseline (Lopez et al. 2018) through scvi-tools, when installed.

``pip install "tfmkit[baselines]"`` installs scvi-tools; without it :func:`scvi_embedding` raises a
one-line :class:`~tfmkit.errors.TfmkitError` and the runners leave the ``scvi`` row out. Like PCA,
scVI is fit on the evaluation cells themselves (favouring it over a zero-shot model): the reports
say so. Written as a thin wrapper (not re-implemented) so the baseline is the maintained model.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from tfmkit.errors import TfmkitError

N_LATENT = 10  # scvi-tools' default latent size
MAX_EPOCHS = 100  # CPU budget; scvi-tools' own default is min(400, 20000 / n_cells * 400)


def scvi_available() -> bool:
    """Whether scvi-tools can be imported."""
    return importlib.util.find_spec("scvi") is not None


def scvi_embedding(counts, *, batches=None, n_latent: int = N_LATENT,
                   max_epochs: int = MAX_EPOCHS, seed: int = 0) -> np.ndarray:
    """``(N, n_latent)`` scVI latent means of raw ``counts`` (cells x genes, dense or sparse).

    ``batches`` (one label per cell) become scVI's batch covariate. Trained on the CPU without
    progress output; seeded through ``scvi.settings.seed``.
    """
    if not scvi_available():
        raise TfmkitError("the scvi baseline needs scvi-tools: pip install 'tfmkit[baselines]'")
    import logging

    import scvi

    # Lightning's console chatter (seed, GPU/TPU lines, tips, log-interval warnings) would flood
    # tfmkit's output: silenced for this call only, the loggers' levels are restored after.
    quiet = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric",
                                            "lightning_fabric", "pytorch_lightning")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        return _fit(scvi, counts, batches, n_latent, max_epochs, seed)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def _fit(scvi, counts, batches, n_latent: int, max_epochs: int, seed: int) -> np.ndarray:
    """Set up, train and embed with scVI (see :func:`scvi_embedding`)."""
    import logging
    import warnings

    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    scvi.settings.seed = int(seed)
    scvi.settings.verbosity = logging.ERROR
    X = sp.csr_matrix(counts, dtype=np.float32)
    if X.shape[0] < 2:
        raise TfmkitError("the scvi baseline needs at least 2 cells")
    obs = pd.DataFrame(index=[str(i) for i in range(X.shape[0])])
    if batches is not None:
        obs["batch"] = pd.Categorical(np.asarray(batches).astype(str))
    a = ad.AnnData(X=X, obs=obs)
    scvi.model.SCVI.setup_anndata(a, batch_key="batch" if batches is not None else None)
    model = scvi.model.SCVI(a, n_latent=n_latent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                    early_stopping=False, logger=False, enable_model_summary=False)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
