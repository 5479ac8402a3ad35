"""Gene coverage against a model vocabulary: the printed line, warn / refuse thresholds, causes."""

import io

import numpy as np
import pytest

from tfmkit.data.coverage import (check_coverage, classify_gene_name, gene_coverage,
                                  namespace_counts, other_species)
from tfmkit.data.hgnc import load_hgnc
from tfmkit.errors import TfmkitError


@pytest.fixture(scope="module")
def human():
    """2,000 real upper-case protein-coding HGNC symbols (sorted; no C1orf112-style names,
    or C3-style names, whose capitalised form is the same string)."""
    return sorted(s for s in load_hgnc().protein_coding() if s == s.upper() and s.capitalize() != s)[:2000]


def _report(names, vocab, **kw):
    vocab = set(vocab)
    mapped = np.array([n in vocab for n in names])
    return gene_coverage(names, int(mapped.sum()), len(vocab), mapped=mapped, **kw)


def test_full_coverage_prints_one_line(human):
    out = io.StringIO()
    rep = check_coverage(_report(human + ["AL627309.1"], human[:1600]), file=out)
    assert out.getvalue() == ("mapped 1600 of 2001 input genes to the model vocabulary "
                              "(100.0% of the vocabulary)\n")
    assert rep.frac_vocab == 1.0 and rep.frac_input == pytest.approx(1600 / 2001)


def test_mouse_symbols_are_refused_with_cause(human):
    """Issue 11 #6: Cd3e-style names matched 1.4% of the vocabulary and exited 0 silently."""
    mouse = [s.capitalize() for s in human]  # Cd3e, Actb, ...
    names = mouse[:1980] + human[:20]  # a few names that coincide with human symbols
    rep = _report(names, human, source="marrow.h5ad")
    assert rep.n_mapped == 20 and rep.frac_vocab == pytest.approx(0.01)
    out = io.StringIO()
    with pytest.raises(TfmkitError, match=r"marrow.h5ad: 1.0% of the 2000-gene model vocabulary is in "
                                          r"the input \(below 10%\); likely cause: mouse/rat-style symbols "
                                          r"\(e.g. A1bg.*--allow-low-coverage"):
        check_coverage(rep, file=out)
    assert out.getvalue() == ""  # a refusal is one line: the error itself
    out = io.StringIO()
    check_coverage(rep, allow_low_coverage=True, file=out)  # allowed: warns instead
    assert "warning: marrow.h5ad: 1.0% of the 2000-gene model vocabulary" in out.getvalue()


@pytest.mark.parametrize("names,cause", [
    ([f"ENSMUSG{i:011d}" for i in range(500)], r"Ensembl ids of another species \(mouse: 500"),
    ([f"ENSG{i:011d}.12" for i in range(500)], "version suffixes"),
    ([f"ENSG{i:011d}" for i in range(500)], "not converted to symbols"),
    ([str(1000 + i) for i in range(500)], "numeric gene ids"),
    ([f"{i}_at" for i in range(500)], "microarray probe ids"),
    ([f"gene{i}x" for i in range(500)], "lower-case symbols"),
])
def test_causes_are_named(names, cause, human):
    with pytest.raises(TfmkitError, match=cause):
        check_coverage(_report(names + human[:5], human), file=io.StringIO())


def test_nothing_mapped_is_refused_even_when_allowed(human):
    rep = _report([f"ENSMUSG{i:011d}" for i in range(50)], human)
    with pytest.raises(TfmkitError, match="none of the 50 input genes maps to the model vocabulary"):
        check_coverage(rep, allow_low_coverage=True, file=io.StringIO())


def test_hvg_subset_warns_and_small_panel_is_refused(human):
    out = io.StringIO()
    check_coverage(_report(human[:600], human), file=out)  # 30% of the vocabulary
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("warning: 30.0% of the 2000-gene model vocabulary")
    assert "only 600 genes (a highly-variable-gene subset" in lines[1]
    with pytest.raises(TfmkitError, match="only 150 genes"):
        check_coverage(_report(human[:150], human), file=io.StringIO())
    # custom thresholds
    check_coverage(_report(human[:150], human), refuse_below=0.05, warn_below=0.05, file=io.StringIO())


def test_hgnc_mode_without_vocabulary(human):
    out = io.StringIO()
    rep = gene_coverage(human[:90] + ["Cd3e"] * 10, 90)  # pre-training: reference is HGNC
    check_coverage(rep, file=out)
    assert out.getvalue() == "mapped 90 of 100 input genes to HGNC human gene symbols (90.0%)\n"
    rep = gene_coverage([s.capitalize() for s in human[:100]], 3)
    with pytest.raises(TfmkitError, match=r"only 3.0% of the input genes are human HGNC symbols.*mouse"):
        check_coverage(rep, file=io.StringIO())


def test_bad_arguments():
    with pytest.raises(TfmkitError, match="n_mapped"):
        gene_coverage(["A"], 2, 10)
    with pytest.raises(TfmkitError, match="vocab_size"):
        gene_coverage(["A"], 1, 0)


def test_classification():
    assert [classify_gene_name(n) for n in ["CD3E", "C1orf112", "Cd3e", "mt-Co1", "cd3e",
                                            "ENSG00000198851.7", "ENSDARG00000012345"]] == [
        "symbol", "symbol", "mouse_case", "mouse_case", "lower_case", "ensembl_version", "ensembl_other"]
    assert namespace_counts(["CD3E", "Cd3e", "Actb"]) == {"symbol": 1, "mouse_case": 2}
    assert other_species(["ENSMUSG00000000001", "ENSRNOG00000000001", "ENSG00000198851"]) == {
        "mouse": 1, "rat": 1}
