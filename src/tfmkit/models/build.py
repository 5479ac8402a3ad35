"""Resolve family configs (``family/preset`` + overrides) and build models from the registry."""

from __future__ import annotations

from dataclasses import fields, replace

from tfmkit.errors import TfmkitError
from tfmkit.models.protocol import MODELS, FamilyConfig, FoundationModel

DEFAULT_FAMILY = "txfm"


def family_class(name: str) -> type[FoundationModel]:
    """The registered :class:`FoundationModel` subclass of family ``name``."""
    if name not in MODELS:
        raise TfmkitError(f"unknown model family {name!r}; choose one of: {', '.join(MODELS.names())}")
    return MODELS.get(name)


def split_spec(spec: str) -> tuple[str, str]:
    """``"gpl_ar/tiny"`` -> ``("gpl_ar", "tiny")``; a bare preset (``"S"``) means TxFM."""
    family, _, preset = spec.rpartition("/")
    return (family or DEFAULT_FAMILY), preset


def model_config(spec: str = "txfm/tiny", **overrides) -> FamilyConfig:
    """The config of a named preset (``family/preset``, or a TxFM preset name) with overrides.

    A bad preset or an unknown field is a one-line :class:`TfmkitError` listing valid names.
    """
    family, preset = split_spec(spec)
    cls = family_class(family)
    if preset not in cls.presets:
        raise TfmkitError(f"unknown model preset {preset!r} of family {family!r}; choose one of {sorted(cls.presets)}")
    check_fields(cls.config_class, overrides, f"{family} model")
    return replace(cls.config_class(family=family, preset=preset, **cls.presets[preset]), **overrides)


def config_from_dict(d: dict | None) -> FamilyConfig:
    """A family config from a ``model:`` YAML section (``family``, ``preset`` + field values)."""
    d = dict(d or {})
    family = d.pop("family", DEFAULT_FAMILY)
    preset = d.pop("preset", "tiny")
    return model_config(f"{family}/{preset}", **d)


def check_fields(cls, d: dict, label: str) -> None:
    """Raise a one-line error for keys of ``d`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    bad = set(d) - known
    if bad:
        raise TfmkitError(f"unknown {label} option(s) {sorted(bad)}; valid: {sorted(known)}")


def build_model(spec: str | FamilyConfig = "txfm/tiny", n_genes: int = 0, *,
                library_size: float = 1e5, vocab_genes: list[str] | None = None,
                **overrides) -> FoundationModel:
    """Build a model of any registered family.

    ``spec`` is ``"family/preset"`` (``"txfm/S"``, ``"gpl_ar/tiny"``), a bare TxFM preset
    (``"tiny"``, ``"S"``, ``"B"``, ``"L"``: ``build_model("S", 20000, decoder_layers=0)`` keeps
    working) or a family config dataclass. ``overrides`` replace config fields;
    ``library_size`` is the data's normalisation target ``L``; ``vocab_genes`` the vocabulary's
    gene names (used by encoders that match external tables to genes).
    """
    if n_genes < 1:
        raise TfmkitError(f"n_genes must be >= 1, got {n_genes}")
    if isinstance(spec, FamilyConfig):
        check_fields(type(spec), overrides, f"{spec.family} model")
        cfg = replace(spec, **overrides)
    else:
        cfg = model_config(spec, **overrides)
    return family_class(cfg.family)(cfg, n_genes, library_size=library_size, vocab_genes=vocab_genes)
