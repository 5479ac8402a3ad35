"""Gene-relationship databases for the perturbation benchmark (recall task and simulator).

A thin wrapper over the shipped loaders of :mod:`tfmkit.datasets.genesets`:
``relationship_databases(names)`` -> ``{database: {set name: [gene symbols]}}``. Default
databases: ``corum`` (CORUM protein complexes; CC BY-NC, non-commercial use only), ``hallmark``
(MSigDB Hallmark, CC BY 4.0) and ``reactome`` (the ``REACTOME_`` sets of MSigDB C2, CC BY 4.0).
"""

from __future__ import annotations

from tfmkit.datasets.genesets import load_databases

DATABASES = ("corum", "hallmark", "reactome")


def relationship_databases(names=DATABASES, *, min_size: int = 2, max_size: int | None = 300
                           ) -> dict[str, dict[str, list[str]]]:
    """``{database: {set: genes}}`` keeping sets with ``min_size <= |set| <= max_size`` (huge
    pathways would make every pair of genes "related")."""
    return load_databases(tuple(names), min_size=min_size, max_size=max_size)
