"""Readers and count validation: every bad input is a one-line TfmkitError."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tfmkit.data.io import read_anndata
from tfmkit.data.validate import validate_counts
from tfmkit.errors import TfmkitError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data not available")
    return SHARED


def _adata(X=None):
    X = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.float32) if X is None else X
    return ad.AnnData(X=X)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_valid_counts_pass(fmt):
    X = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.float32)
    validate_counts(sp.csr_matrix(X) if fmt == "csr" else X)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("bad,match", [(np.nan, "contains NaN"), (np.inf, "contains inf"),
                                       (-1.0, "negative"), (0.5, "log-normalised")])
def test_bad_values_raise(fmt, bad, match):
    X = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.float32)
    X[0, 1] = bad
    with pytest.raises(TfmkitError, match=match):
        validate_counts(sp.csr_matrix(X) if fmt == "csr" else X)


def test_non_integer_message_points_to_raw_counts():
    X = np.log1p(np.array([[0, 1, 2], [3, 0, 1]], dtype=np.float32))
    with pytest.raises(TfmkitError) as err:
        validate_counts(X)
    msg = str(err.value)
    assert "--layer" in msg and "adata.raw" in msg and "bulk=True" in msg and "\n" not in msg


def test_integer_tolerance_and_bulk():
    X = np.array([[1 + 5e-7, 2.0]], dtype=np.float64)
    validate_counts(X)  # within 1e-6
    tpm = np.array([[0.5, 12.25]], dtype=np.float32)
    with pytest.raises(TfmkitError):
        validate_counts(tpm)
    validate_counts(tpm, bulk=True)
    with pytest.raises(TfmkitError, match="negative"):
        validate_counts(-tpm, bulk=True)


def test_all_zero_raises():
    with pytest.raises(TfmkitError, match="all zeros"):
        validate_counts(sp.csr_matrix((3, 4), dtype=np.float32))
    with pytest.raises(TfmkitError, match="all zeros"):
        validate_counts(np.zeros((3, 4)))


def test_read_h5ad_roundtrip_and_layer(tmp_path):
    a = _adata()
    a.layers["counts"] = a.X * 2
    p = tmp_path / "x.h5ad"
    a.write_h5ad(p)
    b = read_anndata(p)
    np.testing.assert_array_equal(b.X, a.X)
    c = read_anndata(p, layer="counts")
    np.testing.assert_array_equal(c.X, a.X * 2)
    with pytest.raises(TfmkitError, match=r"layer 'nope' not found; available layers: \['counts'\]"):
        read_anndata(p, layer="nope")


def test_read_errors(tmp_path):
    with pytest.raises(TfmkitError, match="does not exist"):
        read_anndata(tmp_path / "missing.h5ad")
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    with pytest.raises(TfmkitError, match="empty"):
        read_anndata(empty)
    corrupt = tmp_path / "corrupt.h5ad"
    corrupt.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(TfmkitError, match="corrupt"):
        read_anndata(corrupt)
    corrupt_h5 = tmp_path / "corrupt.h5"
    corrupt_h5.write_bytes(b"\x89HDF\r\n garbage" * 10)
    with pytest.raises(TfmkitError, match="corrupt"):
        read_anndata(corrupt_h5)
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(TfmkitError, match="unknown file type"):
        read_anndata(csv)
    with pytest.raises(TfmkitError, match="directory"):
        read_anndata(tmp_path)


def test_zero_cells_raises(tmp_path):
    p = tmp_path / "zero.h5ad"
    ad.AnnData(X=np.zeros((0, 3), dtype=np.float32)).write_h5ad(p)
    with pytest.raises(TfmkitError, match="0 cells"):
        read_anndata(p)


def test_read_10x_h5_real(shared_data):
    a = read_anndata(shared_data / "liao2020_balf" / "GSM4475052_C149_filtered_feature_bc_matrix.h5")
    assert a.shape == (2879, 33539)
    validate_counts(a.X)
