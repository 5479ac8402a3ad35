"""Perturb-seq simulator on real control counts (SPEC §7). Everything it emits is SIMULATED.

No cell-level Perturb-seq data can be bundled, so the perturbation benchmark is exercised on
CRISPRi screens simulated on top of real cells:

1. **Base cells.** Real raw counts: by default the macrophages of the bundled BALF data
   (:func:`tfmkit.datasets.load_balf`, a homogeneous "cell-line-like" population), or any user
   AnnData with raw counts. Genes detected in fewer than ``min_gene_frac`` of the base cells are
   dropped. Each simulated cell blends two random base cells ``a, b`` with weight ``w ~ U(0, 1)``
   (so no two simulated cells share one base cell's profile, which would make near-duplicates
   that dominate nearest-neighbour tasks): profile
   ``p = (1 - mix) (w x_a / sum(x_a) + (1 - w) x_b / sum(x_b)) + mix * mean profile`` and
   depth ``w sum(x_a) + (1 - w) sum(x_b)``.
2. **Targets.** Perturbed genes are drawn among well-expressed genes (detected in at least
   ``min_target_frac`` of base cells) that share a CORUM complex or a Hallmark pathway with other
   expressed genes, a few members per set at a time so that the screen contains known related
   pairs (for the relationship-recall task).
3. **Effects.** Every gene set ``S`` gets a fixed signed response ``v_S ~ N(0, 1)`` over its
   members. Perturbing gene ``g`` with guide ``j`` multiplies the target's rate by
   ``k_gj ~ U(knockdown)`` (CRISPRi) and the other members of its sets by
   ``exp(effect_size * s_g * e_gj * mean_{S ni g} v_S)``, with perturbation strength
   ``s_g ~ U(0.5, 1.5)`` and guide efficiency ``e_gj = (1 - k_gj) / (1 - mean(knockdown))``.
   Genes in the same complex therefore produce similar signatures.
4. **Batches.** ``n_batches`` batches with multiplicative gene effects ``exp(N(0, batch_effect))``
   and depth factors ``exp(N(0, depth_effect))``; every perturbation and the non-targeting
   controls (``n_guides`` control guides) are spread uniformly over batches.
5. **Counts.** ``Poisson(depth * d_b * normalise(p * batch * effect))`` (Gamma-Poisson when
   ``nb_theta`` is set), i.e. resampled at the cell's own depth.
6. **Contexts** (``contexts=N``, for leave-one-context-out perturbation prediction): ``N`` cell
   contexts, each built from a different real cell population of the bundled BALF data
   (:data:`CONTEXT_CELL_TYPES`: macrophages, T cells, epithelial cells, neutrophils), or from the
   categories of ``base.obs[context_column]``. Every context screens the same targets with the
   same knock-down; the partner effect of target ``g`` in context ``c`` is
   ``(1 - rho) * shared_g + rho * specific_{g,c}``, both built as in 3. from independent set
   responses (``rho = context_specificity``), so part of each effect transfers between contexts
   and part does not. Each context has its own ``n_batches`` batches (``<context>_batch<b>``)
   and controls; ``obs['context']`` names the context.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfmkit.errors import TfmkitError

CONTROL_LABEL = "non-targeting"
#: BALF cell populations used as contexts, in order (``contexts=N`` takes the first ``N``).
CONTEXT_CELL_TYPES = ("macrophage", "T cell", "epithelial", "neutrophil")
DESCRIPTION = ("SIMULATED Perturb-seq (tfmkit.datasets.simulate_perturbseq): real control cells "
               "with simulated CRISPRi knock-downs, complex/pathway effects, guides and batches; "
               "not real perturbation data.")


def _base_counts(base: ad.AnnData | None, cell_type: str | None):
    if base is None:
        from tfmkit.datasets import load_balf

        base = load_balf()
        if cell_type is not None and "cell_type_derived" in base.obs:
            base = base[base.obs["cell_type_derived"].astype(str) == cell_type]
        name = f"liao2020_balf ({cell_type or 'all cells'})"
    else:
        name = "user AnnData"
    X = sp.csr_matrix(base.X, dtype=np.float32)
    if X.nnz and (X.data.min() < 0 or np.abs(X.data - np.round(X.data)).max() > 1e-6):
        raise TfmkitError("simulate_perturbseq needs raw integer counts in base.X")
    return X, pd.Index(base.var_names.astype(str)), name


def _context_bases(base: ad.AnnData | None, n: int, column: str):
    """``[(context name, raw counts CSR)]`` of ``n`` cell populations sharing one gene list, the
    genes and a description of the source."""
    if n < 1:
        raise TfmkitError(f"contexts must be >= 1, got {n}")
    if base is None:
        from tfmkit.datasets import load_balf

        base, column, names = load_balf(), "cell_type_derived", list(CONTEXT_CELL_TYPES)
        if n > len(names):
            raise TfmkitError(f"the bundled BALF data give at most {len(names)} contexts "
                              f"({', '.join(names)}); ask for --contexts <= {len(names)}")
        src = f"liao2020_balf ({', '.join(names[:n])})"
    else:
        if column not in base.obs:
            raise TfmkitError(f"contexts from a user AnnData need an obs column {column!r} naming each "
                              "cell's population (context_column)")
        names = [str(c) for c in base.obs[column].astype(str).value_counts().index]
        if n > len(names):
            raise TfmkitError(f"obs[{column!r}] has {len(names)} populations; ask for contexts <= {len(names)}")
        src = f"user AnnData ({column}: {', '.join(names[:n])})"
    labels = base.obs[column].astype(str).to_numpy()
    parts = []
    for name in names[:n]:
        X, genes, _ = _base_counts(base[labels == name], None)
        parts.append((name, X))
    return parts, genes, src


def _choose_targets(genes, detect, sets, n, min_target_frac, rng):
    """Targets grouped by shared sets; returns (targets, {target: [set ids]}, usable sets)."""
    pos = {g: i for i, g in enumerate(genes)}
    usable = {}
    for name, members in sets.items():
        idx = sorted({pos[g] for g in members if g in pos})
        if len(idx) >= 3:
            usable[name] = np.asarray(idx)
    candidates = {name: [i for i in idx if detect[i] >= min_target_frac] for name, idx in usable.items()}
    candidates = {k: v for k, v in candidates.items() if len(v) >= 2}
    pool = sorted({i for v in candidates.values() for i in v})
    if len(pool) < n:
        raise TfmkitError(f"only {len(pool)} expressed genes share a complex/pathway with other "
                          f"expressed genes; ask for fewer perturbations (n_perturbations={n})")
    chosen: list[int] = []
    names = sorted(candidates)
    while len(chosen) < n:
        s = names[rng.integers(len(names))]
        fresh = [i for i in candidates[s] if i not in chosen]
        if not fresh:
            continue
        k = min(len(fresh), int(rng.integers(2, 5)), n - len(chosen))
        chosen += list(rng.choice(fresh, size=k, replace=False))
    member_of = {i: [s for s, idx in usable.items() if i in set(idx.tolist())] for i in chosen}
    return chosen, member_of, usable


def _signature(targets, member_of, usable, response, strength, G, effect_size):
    """``(P, G)`` partner log-fold change per unit guide efficiency of each target (step 3)."""
    signature = np.zeros((len(targets), G), np.float32)  # (P, G)
    for p, t in enumerate(targets):
        acc, cnt = np.zeros(G), np.zeros(G)
        for s in member_of[t]:
            acc[usable[s]] += response[s]
            cnt[usable[s]] += 1
        signature[p] = np.divide(acc, cnt, out=np.zeros(G), where=cnt > 0) * effect_size * strength[p]
        signature[p, t] = 0.0
    return signature


def _cells(X, total, mean_prof, targets, signature, kd, eff, batch_lfc, batch_depth, *,
           cells_per_perturbation, n_guides, n_controls, profile_mix, nb_theta, rng):
    """Counts and assignments of one context's cells (steps 1, 3-5)."""
    n_batches = len(batch_depth)
    prof = sp.diags(1.0 / total) @ X  # (N0, G) profiles
    n_pert_cells = len(targets) * cells_per_perturbation
    pert_idx = np.concatenate([np.repeat(np.arange(len(targets)), cells_per_perturbation),
                               np.full(n_controls, -1)])
    guide_idx = rng.integers(0, n_guides, size=len(pert_idx))
    batch_idx = np.concatenate([rng.integers(0, n_batches, size=n_pert_cells),
                                rng.permutation(np.arange(n_controls) % n_batches)])
    order = rng.permutation(len(pert_idx))
    pert_idx, guide_idx, batch_idx = pert_idx[order], guide_idx[order], batch_idx[order]
    base_idx = rng.integers(0, X.shape[0], size=(len(pert_idx), 2))
    base_w = rng.uniform(0.0, 1.0, size=len(pert_idx))

    blocks = []
    for start in range(0, len(pert_idx), 2000):
        sl = slice(start, start + 2000)
        pi, gi, bi, ci, w = pert_idx[sl], guide_idx[sl], batch_idx[sl], base_idx[sl], base_w[sl]
        cell = w[:, None] * prof[ci[:, 0]].toarray() + (1 - w)[:, None] * prof[ci[:, 1]].toarray()
        rate = (1.0 - profile_mix) * cell + profile_mix * mean_prof  # (n, G)
        depth = w * total[ci[:, 0]] + (1 - w) * total[ci[:, 1]]
        lfc = batch_lfc[bi].copy()  # (n, G)
        pert = pi >= 0
        lfc[pert] += signature[pi[pert]] * eff[pi[pert], gi[pert]][:, None]
        rate *= np.exp(lfc)
        rows = np.flatnonzero(pert)
        rate[rows, np.asarray(targets)[pi[rows]]] *= kd[pi[rows], gi[rows]]
        rate *= (depth * batch_depth[bi] / rate.sum(axis=1))[:, None]
        if nb_theta is not None:
            rate = rng.gamma(nb_theta, rate / nb_theta)
        blocks.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    return sp.vstack(blocks).tocsr(), pert_idx, guide_idx, batch_idx, base_idx, base_w


def simulate_perturbseq(base: ad.AnnData | None = None, *, n_perturbations: int = 50,
                        cells_per_perturbation: int = 50, n_guides: int = 3, n_batches: int = 4,
                        n_controls: int | None = None, effect_size: float = 1.0,
                        knockdown: tuple[float, float] = (0.1, 0.3), batch_effect: float = 0.2,
                        depth_effect: float = 0.3, profile_mix: float = 0.2,
                        nb_theta: float | None = None, cell_type: str | None = "macrophage",
                        databases=("corum", "hallmark"), min_gene_frac: float = 0.01,
                        min_target_frac: float = 0.2, contexts: int | None = None,
                        context_specificity: float = 0.3, context_column: str = "cell_type",
                        seed: int = 0) -> ad.AnnData:
    """Simulate a CRISPRi Perturb-seq screen on real control counts (SPEC §7); returns raw counts.

    ``obs``: ``perturbation`` (target gene or ``"non-targeting"``), ``guide``, ``batch``,
    ``is_control`` (bool), ``knockdown`` (target rate factor, NaN for controls), ``base_cell_a``,
    ``base_cell_b``, ``base_weight_a`` (the two blended base cells).
    ``var``: ``is_target``. ``uns['simulated'] = True`` and ``uns['simulation']`` (description
    and parameters). ``n_controls`` defaults to ``max(50 * n_batches, 10% of perturbed cells)``
    (per context). ``cell_type`` selects the bundled BALF cell type used as base (ignored for a
    user ``base`` and with ``contexts``).

    ``contexts=N`` simulates ``N`` cell contexts (step 6 of the module doc; ``obs['context']``):
    the bundled BALF populations :data:`CONTEXT_CELL_TYPES`, or the ``N`` largest categories of
    ``base.obs[context_column]``; ``context_specificity`` is the share ``rho`` of each partner
    effect that is specific to a context. Targets are detected in ``min_target_frac`` of the
    base cells of every context.
    """
    from tfmkit.datasets.genesets import load_databases

    if n_perturbations < 1 or cells_per_perturbation < 1 or n_guides < 1 or n_batches < 1:
        raise TfmkitError("n_perturbations, cells_per_perturbation, n_guides and n_batches must be >= 1")
    lo, hi = knockdown
    if not 0.0 <= lo <= hi < 1.0:
        raise TfmkitError(f"knockdown must be a range inside [0, 1), got {knockdown}")
    if not 0.0 <= context_specificity <= 1.0:
        raise TfmkitError(f"context_specificity must be in [0, 1], got {context_specificity}")
    rng = np.random.default_rng(seed)
    if contexts is None:
        X, genes, base_name = _base_counts(base, cell_type)
        parts = [(None, X)]
    else:
        parts, genes, base_name = _context_bases(base, int(contexts), context_column)
    pooled = sp.vstack([X for _, X in parts]).tocsr()
    pooled = pooled[np.asarray(pooled.sum(axis=1)).ravel() > 0]
    if pooled.shape[0] < 10 or any((np.asarray(X.sum(axis=1)).ravel() > 0).sum() < 10 for _, X in parts):
        raise TfmkitError("the base AnnData needs at least 10 cells with counts (in every context)")
    detect = np.asarray((pooled > 0).mean(axis=0)).ravel()
    keep = detect >= min_gene_frac
    genes = genes[keep]
    G = len(genes)
    bases = []
    for name, X in parts:
        total = np.asarray(X.sum(axis=1)).ravel()  # depth over all the base cell's genes
        X, total = X[total > 0][:, keep], total[total > 0]
        mean_prof = np.asarray((sp.diags(1.0 / total) @ X).mean(axis=0)).ravel()
        bases.append((name, X, total, mean_prof))
    # targets must be expressed in every context (the pooled detection for one context)
    detect_t = (detect[keep] if contexts is None else
                np.min([np.asarray((X > 0).mean(axis=0)).ravel() for _, X, _, _ in bases], axis=0))

    sets = {f"{db}:{k}": v for db, d in load_databases(databases, max_size=200).items()
            for k, v in d.items()}
    targets, member_of, usable = _choose_targets(list(genes), detect_t, sets, n_perturbations,
                                                 min_target_frac, rng)
    used = [s for s in usable if any(s in member_of[t] for t in targets)]
    response = {s: rng.normal(size=len(usable[s])) for s in used}
    strength = rng.uniform(0.5, 1.5, size=len(targets))

    # effect log-fold-change per (perturbation, guide) and target knock-down
    kd = rng.uniform(lo, hi, size=(len(targets), n_guides))
    eff = (1.0 - kd) / (1.0 - 0.5 * (lo + hi))
    shared = _signature(targets, member_of, usable, response, strength, G, effect_size)  # (P, G)

    n_pert_cells = n_perturbations * cells_per_perturbation
    n_controls = max(50 * n_batches, n_pert_cells // 10) if n_controls is None else int(n_controls)
    if n_controls < n_batches:
        raise TfmkitError(f"n_controls={n_controls} leaves a batch without controls; use >= n_batches")
    counts, obs = [], []
    for c, (name, X, total, mean_prof) in enumerate(bases):
        signature = shared
        if name is not None:  # context-specific share of every partner effect
            specific = _signature(targets, member_of, usable,
                                  {s: rng.normal(size=len(usable[s])) for s in used}, strength, G, effect_size)
            signature = ((1.0 - context_specificity) * shared + context_specificity * specific).astype(np.float32)
        batch_lfc = rng.normal(0.0, batch_effect, size=(n_batches, G)).astype(np.float32)
        batch_depth = np.exp(rng.normal(0.0, depth_effect, size=n_batches))
        cnt, pert_idx, guide_idx, batch_idx, base_idx, base_w = _cells(
            X, total, mean_prof, targets, signature, kd, eff, batch_lfc, batch_depth,
            cells_per_perturbation=cells_per_perturbation, n_guides=n_guides, n_controls=n_controls,
            profile_mix=profile_mix, nb_theta=nb_theta, rng=rng)
        counts.append(cnt)
        target_names = np.asarray(genes)[targets]
        is_control = pert_idx < 0
        perturbation = np.where(is_control, CONTROL_LABEL, target_names[np.maximum(pert_idx, 0)])
        prefix = "" if name is None else f"{name.replace(' ', '_')}_"
        o = pd.DataFrame({
            "perturbation": perturbation,
            "guide": [f"{p}_g{g + 1}" for p, g in zip(perturbation, guide_idx)],
            "batch": [f"{prefix}batch{b}" for b in batch_idx],
            "is_control": is_control,
            "knockdown": np.where(is_control, np.nan, kd[np.maximum(pert_idx, 0), guide_idx]),
            "base_cell_a": base_idx[:, 0], "base_cell_b": base_idx[:, 1], "base_weight_a": base_w,
        }, index=[f"sim{prefix}{i:06d}" for i in range(len(pert_idx))])
        if name is not None:
            o.insert(3, "context", name)
        obs.append(o)
    obs = pd.concat(obs)
    for col in ("perturbation", "guide", "batch") + (("context",) if contexts is not None else ()):
        obs[col] = pd.Categorical(obs[col].astype(str))
    var = pd.DataFrame({"is_target": np.isin(np.arange(G), targets)}, index=genes)
    out = ad.AnnData(X=sp.vstack(counts).tocsr(), obs=obs, var=var)
    out.uns["simulated"] = True
    out.uns["simulation"] = {
        "description": DESCRIPTION, "base": base_name, "seed": int(seed),
        "n_perturbations": int(n_perturbations), "cells_per_perturbation": int(cells_per_perturbation),
        "n_guides": int(n_guides), "n_batches": int(n_batches), "n_controls": int(n_controls),
        "effect_size": float(effect_size), "knockdown": [float(lo), float(hi)],
        "batch_effect": float(batch_effect), "depth_effect": float(depth_effect),
        "profile_mix": float(profile_mix), "nb_theta": -1.0 if nb_theta is None else float(nb_theta),
        "databases": list(databases),
    }
    if contexts is not None:
        out.uns["simulation"].update(contexts=[n for n, *_ in bases],
                                     context_specificity=float(context_specificity))
    return out
