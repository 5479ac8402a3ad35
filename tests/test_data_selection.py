"""Training-cell selection (BMFM §2.2.3): uniform subsample and round-robin equal downsample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfmkit.data.selection import equal_downsample, strata_codes, uniform_subsample
from tfmkit.errors import TfmkitError


def _obs(sizes: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(ct, tis) for (ct, tis), n in sizes.items() for _ in range(n)]
    rng = np.random.default_rng(7)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # strata interleaved in row order
    return pd.DataFrame(rows, columns=["cell_type", "tissue"], index=[f"c{i}" for i in range(len(rows))])


SIZES = {("T", "lung"): 40, ("T", "blood"): 7, ("B", "blood"): 12, ("mac", "lung"): 3, ("B", "lung"): 25}


def _round_robin_reference(strata: np.ndarray, n: int) -> np.ndarray:
    """Cells per stratum of a literal round-robin loop: one per non-empty stratum per round."""
    left = np.bincount(strata).copy()
    taken = np.zeros_like(left)
    while n > 0 and left.sum():
        for s in range(len(left)):  # which strata win the last partial round is order-dependent
            if left[s] and n > 0:
                left[s] -= 1
                taken[s] += 1
                n -= 1
    return taken


@pytest.mark.parametrize("k", [1, 3])
def test_equal_downsample_gives_k_cells_per_stratum_up_to_the_smallest(k):
    obs = _obs(SIZES)
    idx = equal_downsample(obs, ["cell_type", "tissue"], n=k * len(SIZES), seed=0)
    got = obs.iloc[idx].groupby(["cell_type", "tissue"]).size()
    assert (got == k).all() and len(got) == len(SIZES)  # smallest stratum has 3 cells
    assert np.array_equal(idx, np.sort(idx)) and len(set(idx)) == len(idx)


def test_equal_downsample_caps_large_strata_and_keeps_small_ones_whole():
    obs = _obs(SIZES)
    strata = strata_codes(obs, ["cell_type", "tissue"])
    for n in (20, 33, 50, 87):
        idx = equal_downsample(obs, ["cell_type", "tissue"], n=n, seed=3)
        got = np.bincount(strata[idx], minlength=strata.max() + 1)
        ref = _round_robin_reference(strata, n)
        assert got.sum() == n
        # same multiset of per-stratum counts as the literal loop (ties in the last round aside)
        cap = ref.max()
        sizes = np.bincount(strata)
        assert np.all((got == np.minimum(sizes, cap)) | (got == np.minimum(sizes, cap - 1)))
        assert np.all(got[sizes <= cap - 1] == sizes[sizes <= cap - 1])  # small strata kept whole
    assert len(equal_downsample(obs, "tissue", fraction=1.0)) == len(obs)


def test_equal_downsample_is_seeded():
    obs = _obs(SIZES)
    a = equal_downsample(obs, ["cell_type", "tissue"], n=30, seed=1)
    b = equal_downsample(obs, ["cell_type", "tissue"], n=30, seed=1)
    c = equal_downsample(obs, ["cell_type", "tissue"], n=30, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_missing_values_form_their_own_stratum_and_bad_input_is_refused():
    obs = pd.DataFrame({"ct": ["a", "a", None, None, "b", "b", "b"]})
    idx = equal_downsample(obs, "ct", n=3, seed=0)
    assert sorted(obs.iloc[idx]["ct"].fillna("NA")) == ["NA", "a", "b"]
    with pytest.raises(TfmkitError, match=r"stratum column\(s\) \['tissue'\] not in obs"):
        equal_downsample(obs, ["ct", "tissue"], n=2)
    with pytest.raises(TfmkitError, match="exactly one of n"):
        equal_downsample(obs, "ct")
    with pytest.raises(TfmkitError, match="fraction must be in"):
        uniform_subsample(10, fraction=1.5)


def test_uniform_subsample_is_uniform_and_seeded():
    a = uniform_subsample(100, 30, seed=0)
    assert len(a) == 30 and len(set(a)) == 30 and a.min() >= 0 and a.max() < 100
    assert np.array_equal(a, uniform_subsample(100, 30, seed=0))
    assert len(uniform_subsample(100, fraction=0.25, seed=1)) == 25
    hits = np.zeros(10)
    for s in range(2000):
        hits[uniform_subsample(10, 3, seed=s)] += 1
    from scipy.stats import chisquare

    assert chisquare(hits).pvalue > 1e-3  # each cell chosen with probability 3/10
