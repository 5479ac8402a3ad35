"""Perturb-seq simulator on real BALF counts (SIMULATED data)."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tfmkit.datasets.simulate import CONTROL_LABEL, simulate_perturbseq
from tfmkit.errors import TfmkitError
from tfmkit.evaluation.perturbation.databases import relationship_databases
from tfmkit.evaluation.perturbation.recall import known_pair_matrix


@pytest.fixture(scope="module")
def sim():
    return simulate_perturbseq(n_perturbations=15, cells_per_perturbation=40, n_batches=3, seed=3)


def test_layout_and_labels(sim):
    obs = sim.obs
    assert {"perturbation", "guide", "batch", "is_control"} <= set(obs.columns)
    assert obs["is_control"].dtype == bool
    assert (obs.loc[obs.is_control, "perturbation"] == CONTROL_LABEL).all()
    assert obs.loc[~obs.is_control, "perturbation"].nunique() == 15
    assert (obs.loc[~obs.is_control, "perturbation"].astype(str).value_counts() == 40).all()
    assert obs.groupby("batch", observed=True)["is_control"].sum().min() > 0  # controls in every batch
    assert obs["guide"].astype(str).str.rsplit("_g", n=1).str[0].equals(obs["perturbation"].astype(str))
    assert obs["guide"].nunique() <= 15 * 3 + 3
    assert sim.uns["simulated"] is True and "SIMULATED" in sim.uns["simulation"]["description"]
    X = sim.X
    assert sp.issparse(X) and np.allclose(X.data, np.round(X.data)) and X.data.min() >= 0
    assert sim.var["is_target"].sum() == 15


def test_seeded(sim):
    again = simulate_perturbseq(n_perturbations=15, cells_per_perturbation=40, n_batches=3, seed=3)
    assert (again.X != sim.X).nnz == 0 and again.obs.equals(sim.obs)
    other = simulate_perturbseq(n_perturbations=15, cells_per_perturbation=40, n_batches=3, seed=4)
    assert other.X.shape != sim.X.shape or (other.X != sim.X).nnz > 0


def test_knockdown_and_partners(sim):
    X = sim.X.toarray()
    frac = X / X.sum(1, keepdims=True)
    ctrl = sim.obs.is_control.to_numpy()
    ratios = []
    for g in sim.var_names[sim.var.is_target]:
        on = (sim.obs.perturbation == g).to_numpy()
        ratios.append(frac[on, sim.var_names.get_loc(g)].mean() / frac[ctrl, sim.var_names.get_loc(g)].mean())
    # CRISPRi scales the target's rate by 0.1-0.3 (the profile mix keeps ratios near that range)
    assert 0.05 < np.median(ratios) < 0.4
    # every target shares a CORUM complex or Hallmark set with another measured gene, and the
    # screen contains related target pairs (needed by the recall task)
    dbs = relationship_databases(("corum", "hallmark"), max_size=200)
    targets = list(sim.var_names[sim.var.is_target])
    allsets = {f"{d}:{k}": v for d, s in dbs.items() for k, v in s.items()}
    genes = set(sim.var_names)
    for t in targets:
        assert any(t in v and len(genes & set(v)) >= 3 for v in allsets.values())
    assert known_pair_matrix(targets, allsets).sum() >= 3


def test_user_base_and_errors():
    rng = np.random.default_rng(0)
    from tfmkit.datasets import load_balf

    genes = load_balf().var_names[:3000]
    base = ad.AnnData(X=sp.csr_matrix(rng.poisson(2.0, size=(60, 3000)).astype(np.float32)))
    base.var_names = list(genes)
    with pytest.raises(TfmkitError, match="knockdown"):
        simulate_perturbseq(base, knockdown=(0.5, 0.2))
    bad = base.copy()
    bad.X = bad.X * 0.5
    with pytest.raises(TfmkitError, match="raw integer counts"):
        simulate_perturbseq(bad)
    with pytest.raises(TfmkitError, match="fewer perturbations"):
        simulate_perturbseq(base, n_perturbations=5000)


def test_contexts_share_targets_with_shared_and_specific_effects():
    """``contexts=N``: N real cell populations, the same targets everywhere, controls in every
    context, partner effects partly shared (correlated across contexts) and partly specific."""
    sim = simulate_perturbseq(n_perturbations=6, cells_per_perturbation=30, n_batches=2, contexts=3,
                              context_specificity=0.3, min_gene_frac=0.05, seed=1)
    obs = sim.obs
    assert sorted(obs["context"].unique()) == ["T cell", "epithelial", "macrophage"]
    assert sim.uns["simulated"] is True and sim.uns["simulation"]["contexts"] == ["macrophage", "T cell", "epithelial"]
    for _, o in obs.groupby("context", observed=True):
        assert o["is_control"].sum() > 0 and o.loc[~o.is_control, "perturbation"].nunique() == 6
        assert o["batch"].astype(str).str.startswith(o["context"].iloc[0].replace(" ", "_")).all()
    X = sim.X.toarray()
    L = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    ctx = obs["context"].astype(str).to_numpy()
    means = {c: L[ctx == c].mean(0) for c in ("macrophage", "T cell", "epithelial")}
    # the base populations differ (real cell types): context means are far apart
    assert np.abs(means["macrophage"] - means["epithelial"]).mean() > 0.05
    # knock-down in every context
    for g in sim.var_names[sim.var.is_target]:
        gi = sim.var_names.get_loc(g)
        for c in means:
            on = (obs["perturbation"] == g).to_numpy() & (ctx == c)
            ctl = obs["is_control"].to_numpy() & (ctx == c)
            assert X[on, gi].sum() / X[on].sum() < 0.6 * X[ctl, gi].sum() / X[ctl].sum()
    # partner effects: correlated across contexts (shared 70%) but not identical (specific 30%)
    pert = (obs["perturbation"] != CONTROL_LABEL).to_numpy()
    rs = []
    for g in sim.var_names[sim.var.is_target]:
        on = (obs["perturbation"] == g).to_numpy()
        d = {c: L[on & (ctx == c)].mean(0) - L[~pert & (ctx == c)].mean(0) for c in ("macrophage", "T cell")}
        big = np.argsort(-(np.abs(d["macrophage"]) + np.abs(d["T cell"])))[:40]
        big = big[big != sim.var_names.get_loc(g)]
        rs.append(np.corrcoef(d["macrophage"][big], d["T cell"][big])[0, 1])
    assert 0.3 < np.median(rs) and max(rs) < 0.98
    with pytest.raises(TfmkitError, match="at most 4 contexts"):
        simulate_perturbseq(contexts=5)
