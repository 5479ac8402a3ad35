"""Gene coverage: how many of an input's genes a model (or HGNC) knows, and why not more.

A model only sees the input genes that are in its vocabulary. A file of mouse symbols
(``Cd3e``), Ensembl ids of another species (``ENSMUSG…``) or an unconverted id column maps a
handful of genes and yields embeddings of nothing — silently, unless checked. This module is
pure (no AnnData): :func:`gene_coverage` builds a :class:`CoverageReport` from gene names and
a mapped count, :func:`check_coverage` prints it and warns or refuses.

Thresholds (fractions; reasoning):

- **With a model vocabulary** the relevant number is the share of the *vocabulary* present in
  the input — the input share is misleading, because a full 10x file has ~33k genes of which a
  16k-gene vocabulary can hold at most half, and that is fine. Warn below
  :data:`WARN_VOCAB_FRACTION` = 50 % (the model sees less than half of what it was trained on:
  an HVG subset of 2,000 genes against a 16k vocabulary gives 12 %, usable but degraded);
  refuse below :data:`REFUSE_VOCAB_FRACTION` = 10 % (mouse symbols against a human vocabulary
  gave 1.4 %; a targeted panel of a few hundred genes lands here too, hence the override).
- **Without a vocabulary** (building one, i.e. pre-training) the reference is the HGNC table
  and the input share is what matters: a human 10x file maps ~70–95 % of its genes (unnamed
  lncRNA clones do not), mouse or unconverted ids map < 5 %. Warn below
  :data:`WARN_INPUT_FRACTION` = 50 %, refuse below :data:`REFUSE_INPUT_FRACTION` = 10 %.

No genes mapped is always refused (``allow_low_coverage`` cannot make an embedding of nothing).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections import Counter

import numpy as np

from tfmkit.errors import TfmkitError

WARN_VOCAB_FRACTION = 0.5
REFUSE_VOCAB_FRACTION = 0.10
WARN_INPUT_FRACTION = 0.5
REFUSE_INPUT_FRACTION = 0.10

# Ensembl gene-id prefixes of common non-human species (Ensembl stable-id prefixes).
ENSEMBL_SPECIES = {
    "ENSMUSG": "mouse", "ENSRNOG": "rat", "ENSDARG": "zebrafish", "ENSGALG": "chicken",
    "ENSSSCG": "pig", "ENSBTAG": "cow", "ENSMMUG": "macaque", "ENSCAFG": "dog",
    "ENSPTRG": "chimpanzee", "ENSXETG": "frog",
}

# (class, regex, human-readable cause). Checked in order; the first match classifies a name.
_PATTERNS = [
    ("ensembl_version", re.compile(r"^ENSG\d{11}\.\d+"),
     "human Ensembl ids with version suffixes (e.g. {ex}) that were not converted to symbols; "
     "harmonise them first (tfmkit.data.hgnc.harmonize_genes strips the version)"),
    ("ensembl_human", re.compile(r"^ENSG\d{11}$"),
     "human Ensembl ids (e.g. {ex}) that were not converted to symbols; harmonise them first "
     "(tfmkit.data.hgnc.harmonize_genes)"),
    ("ensembl_other", re.compile(r"^ENS[A-Z]{3,4}G\d{11}"),
     "Ensembl ids of another species ({species}, e.g. {ex}); the vocabulary is human — use "
     "human data or convert orthologues"),
    ("numeric", re.compile(r"^\d+$"),
     "numeric gene ids (e.g. {ex}: Entrez ids or a row index?); put gene symbols or Ensembl "
     "ids in var_names or var['gene_ids']"),
    ("refseq", re.compile(r"^[NX][MR]_\d+"),
     "RefSeq transcript ids (e.g. {ex}); aggregate to genes and use gene symbols"),
    ("probe", re.compile(r"_(s_|x_)?at$"),
     "microarray probe ids (e.g. {ex}); map probes to gene symbols first"),
    ("mouse_case", re.compile(r"^(?!C\d+orf\d)(?:[A-Z][a-z0-9][a-z0-9-]*|mt-[A-Z][a-z0-9]+)$"),
     "mouse/rat-style symbols (e.g. {ex}: capitalised first letter only); the vocabulary is "
     "human HGNC symbols — use human data or convert orthologues"),
    ("lower_case", re.compile(r"^[a-z][a-z0-9.-]*\d[a-z0-9.-]*$|^[a-z]{2,}[a-z0-9.-]*$"),
     "lower-case symbols (e.g. {ex}: zebrafish-style, or names lower-cased by a pipeline); "
     "the vocabulary is upper-case human HGNC symbols"),
]
_CAUSES = {name: text for name, _, text in _PATTERNS}


def classify_gene_name(name: str) -> str:
    """Namespace of one gene name: ``ensembl_version``, ``ensembl_human``, ``ensembl_other``,
    ``numeric``, ``refseq``, ``probe``, ``mouse_case``, ``lower_case`` or ``symbol`` (anything
    else, e.g. an upper-case human symbol or an unknown string)."""
    for cls, pattern, _ in _PATTERNS:
        if pattern.search(name):
            return cls
    return "symbol"


def namespace_counts(names) -> dict[str, int]:
    """``{class: count}`` of :func:`classify_gene_name` over ``names``."""
    return dict(Counter(classify_gene_name(str(n)) for n in names))


def other_species(names) -> dict[str, int]:
    """``{species: count}`` for Ensembl ids of non-human species among ``names``."""
    out: Counter = Counter()
    for n in names:
        n = str(n)
        if n.startswith("ENS") and not n.startswith("ENSG"):
            out[ENSEMBL_SPECIES.get(n[:7], "non-human")] += 1
    return dict(out)


@dataclasses.dataclass(frozen=True)
class CoverageReport:
    """Gene coverage of one input.

    ``n_input`` genes in the input, ``n_mapped`` of them mapped to the reference (a model
    vocabulary of ``vocab_size`` genes, or the HGNC table when ``vocab_size`` is ``None``);
    ``frac_input = n_mapped / n_input``; ``frac_vocab = n_mapped / vocab_size`` (``None``
    without a vocabulary); ``likely_cause`` (``None`` when nothing stands out) and
    ``unmapped_examples``; ``source`` names the input in messages.
    """

    n_input: int
    n_mapped: int
    vocab_size: int | None
    frac_input: float
    frac_vocab: float | None
    likely_cause: str | None
    unmapped_examples: tuple
    source: str | None = None

    def summary(self) -> str:
        """``mapped N of M input genes to the model vocabulary (X% of the vocabulary)``."""
        where = f"{self.source}: " if self.source else ""
        if self.vocab_size is None:
            return (f"{where}mapped {self.n_mapped} of {self.n_input} input genes to HGNC human "
                    f"gene symbols ({100 * self.frac_input:.1f}%)")
        return (f"{where}mapped {self.n_mapped} of {self.n_input} input genes to the model "
                f"vocabulary ({100 * self.frac_vocab:.1f}% of the vocabulary)")


def likely_cause(names, *, n_input: int | None = None, n_mapped: int = 0,
                 vocab_size: int | None = None) -> str | None:
    """The most likely reason ``names`` (the *unmapped* genes, or all of them) do not map:
    the namespace shared by at least 30 % of them (species, casing, Ensembl versions, numeric
    ids, …), or a small input (a gene subset or targeted panel: fewer genes than the
    vocabulary, most of them mapped)."""
    names = [str(n) for n in names]
    counts = Counter(classify_gene_name(n) for n in names)
    counts.pop("symbol", None)
    if counts:
        cls, k = counts.most_common(1)[0]
        if k >= 0.3 * max(1, len(names)):
            examples = [n for n in names if classify_gene_name(n) == cls][:3]
            species = ", ".join(f"{s}: {c}" for s, c in other_species(names).items())
            return _CAUSES[cls].format(ex=", ".join(examples), species=species)
    n_input = len(names) if n_input is None else n_input
    if vocab_size and n_input < vocab_size and n_mapped >= 0.5 * n_input:
        return (f"the input has only {n_input} genes (a highly-variable-gene subset or a "
                f"targeted panel?); use the file with all measured genes")
    return None


def gene_coverage(gene_names, n_mapped: int, vocab_size: int | None = None, *, mapped=None,
                  source: str | None = None) -> CoverageReport:
    """Coverage report of an input with ``gene_names`` of which ``n_mapped`` map to a model
    vocabulary of ``vocab_size`` genes (``None``: to HGNC symbols, when pre-training).

    ``mapped`` (optional boolean mask over ``gene_names``) restricts the cause analysis and the
    examples to the genes that did not map; without it all names are analysed. Pure function.
    """
    names = np.asarray([str(n) for n in gene_names], dtype=object)
    n_input = int(len(names))
    n_mapped = int(n_mapped)
    if n_mapped < 0 or n_mapped > n_input:
        raise TfmkitError(f"n_mapped must be between 0 and the {n_input} input genes, not {n_mapped}")
    if vocab_size is not None and vocab_size <= 0:
        raise TfmkitError(f"vocab_size must be positive, not {vocab_size}")
    unmapped = names if mapped is None else names[~np.asarray(mapped, dtype=bool)]
    return CoverageReport(
        n_input=n_input,
        n_mapped=n_mapped,
        vocab_size=None if vocab_size is None else int(vocab_size),
        frac_input=n_mapped / max(1, n_input),
        frac_vocab=None if vocab_size is None else n_mapped / vocab_size,
        likely_cause=likely_cause(unmapped, n_input=n_input, n_mapped=n_mapped,
                                  vocab_size=vocab_size),
        unmapped_examples=tuple(unmapped[:5].tolist()),
        source=source,
    )


def check_coverage(report: CoverageReport, *, allow_low_coverage: bool = False,
                   warn_below: float | None = None, refuse_below: float | None = None,
                   file=None) -> CoverageReport:
    """Print ``report.summary()`` on stderr (unless refusing), then a ``warning:`` line when coverage
    is below ``warn_below`` and raise :class:`TfmkitError` below ``refuse_below`` unless
    ``allow_low_coverage`` (then a warning). Coverage is the share of the vocabulary present
    (defaults 0.5 / 0.1) or, without a vocabulary, the share of input genes that map to HGNC
    (defaults 0.5 / 0.1); see the module doc. No mapped gene at all is always refused.
    Returns ``report``."""
    out = sys.stderr if file is None else file
    with_vocab = report.vocab_size is not None
    frac = report.frac_vocab if with_vocab else report.frac_input
    if warn_below is None:
        warn_below = WARN_VOCAB_FRACTION if with_vocab else WARN_INPUT_FRACTION
    if refuse_below is None:
        refuse_below = REFUSE_VOCAB_FRACTION if with_vocab else REFUSE_INPUT_FRACTION
    what = (f"{100 * frac:.1f}% of the {report.vocab_size}-gene model vocabulary is in the input"
            if with_vocab else f"only {100 * frac:.1f}% of the input genes are human HGNC symbols")
    where = f"{report.source}: " if report.source else ""
    if report.likely_cause:
        cause = f"likely cause: {report.likely_cause}"
    elif report.unmapped_examples:
        cause = f"unmapped genes e.g. {', '.join(report.unmapped_examples[:3])}"
    else:
        cause = "check that the input holds the measured genes of the model's species"
    if report.n_mapped == 0:
        target = "to the model vocabulary" if with_vocab else "to a human HGNC symbol"
        raise TfmkitError(f"{where}none of the {report.n_input} input genes maps {target}; {cause}.")
    if frac < refuse_below and not allow_low_coverage:
        raise TfmkitError(f"{where}{what} (below {100 * refuse_below:.0f}%); {cause}; or pass "
                          f"--allow-low-coverage (allow_low_coverage=True) to continue anyway.")
    print(report.summary(), file=out)  # after the refusals: an error stays one line
    if frac < warn_below:
        print(f"warning: {where}{what} (below {100 * warn_below:.0f}%); results rest on fewer "
              f"genes than expected; {cause}.", file=out)
    return report
