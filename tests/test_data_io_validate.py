"""Readers and count validation: every bad input is a one-line TfmkitError."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tfmkit.data.io import check_layer, read_anndata, read_input
from tfmkit.data.validate import count_layers, looks_like_counts, validate_counts
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
    with pytest.raises(TfmkitError, match="X contains non-integer values") as err:
        validate_counts(X)
    msg = str(err.value)
    assert "`--layer NAME`" in msg and "adata.raw" in msg and "\n" not in msg
    assert "--bulk" not in msg  # issue 11 #9: no command has a --bulk flag


def _lognorm_adata(raw=True, counts_layer=True):
    rng = np.random.default_rng(0)
    C = rng.poisson(2.0, size=(50, 8)).astype(np.float32)
    a = ad.AnnData(X=np.log1p(C / C.sum(1, keepdims=True) * 1e4))
    a.layers["scaled"] = a.X - a.X.mean(0)
    if counts_layer:
        a.layers["counts"] = sp.csr_matrix(C)
    if raw:
        a.raw = ad.AnnData(X=sp.csr_matrix(C), var=a.var)
    return a


def test_message_names_file_and_lists_count_layers():
    """Issue 11 #9: name the file, list where raw counts are with the exact --layer flag."""
    a = _lognorm_adata()
    with pytest.raises(TfmkitError, match="non-integer values") as err:
        validate_counts(a.X, adata=a, source="pbmc.h5ad")
    msg = str(err.value)
    assert msg.startswith("pbmc.h5ad: X contains non-integer values")
    assert ("raw counts look to be in layers['counts'], adata.raw: pass `--layer counts` or "
            "`--layer raw` (Python: layer='counts').") in msg
    assert "--bulk" not in msg and "dataset 'input'" not in msg and "\n" not in msg
    # the rejected layer itself is not suggested
    with pytest.raises(TfmkitError, match=r"^pbmc.h5ad: layers\['scaled'\] contains negative.*"
                                          r"pass `--layer counts` or `--layer raw`"):
        validate_counts(a.layers["scaled"], name="layers['scaled']", adata=a, source="pbmc.h5ad",
                        layer="scaled")


def test_message_when_no_layer_holds_counts():
    a = _lognorm_adata(raw=False, counts_layer=False)
    with pytest.raises(TfmkitError, match=r"no layer holds integer counts either \(layers \['scaled'\], "
                                          r"no adata.raw\); use a file with the raw counts"):
        validate_counts(a.X, adata=a)


def test_looks_like_counts_and_count_layers():
    a = _lognorm_adata()
    assert count_layers(a) == ["counts", "raw"]
    assert count_layers(a, exclude="counts") == ["raw"]
    assert looks_like_counts(sp.coo_matrix(a.layers["counts"]))
    assert not looks_like_counts(a.X) and not looks_like_counts(a.layers["scaled"])
    assert not looks_like_counts(np.zeros((3, 3)))


def test_integer_tolerance_and_bulk():
    X = np.array([[1 + 5e-7, 2.0]], dtype=np.float64)
    validate_counts(X)  # within 1e-6
    tpm = np.array([[0.5, 12.25]], dtype=np.float32)
    with pytest.raises(TfmkitError, match="non-integer values .e.g. 0.5.: it looks log-normalised"):
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
    with pytest.raises(TfmkitError, match=r"layer 'nope' not found; available layers: \['counts'\] "
                                          r"\(--layer NAME\), or X \(omit --layer\)\.$"):
        read_anndata(p, layer="nope")


def test_read_input_keeps_file_as_stored(tmp_path):
    """read_input never moves a layer into X (issue 11 #4's cause); a missing layer fails early."""
    a = _lognorm_adata()
    p = tmp_path / "x.h5ad"
    a.write_h5ad(p)
    b = read_input(p, layer="counts")
    np.testing.assert_allclose(b.X, a.X)
    assert set(b.layers) == {"counts", "scaled"} and b.raw is not None
    read_input(p, layer="raw")
    with pytest.raises(TfmkitError, match=r"layer 'cnts' not found in x.h5ad; available layers: "
                                          r"\['counts', 'scaled'\] \(--layer NAME\), adata.raw "
                                          r"\(--layer raw\), or X \(omit --layer\)\.$"):
        read_input(p, layer="cnts")
    check_layer(a, None)


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
