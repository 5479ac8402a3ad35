"""Temporary config fields for ``benchmarks/science_ablation.py`` (issue 12), for this process only.

The science grid sets ``data.zero_fraction`` (:attr:`tfmkit.data.masking.RevealSpec.zero_fraction`)
and ``train.decay`` (``all`` = TxFM, every parameter; ``matrices`` = :func:`tfmkit.optim.param_groups`).
Until :class:`tfmkit.config.DataConfig` / :class:`~tfmkit.config.TrainConfig` have these fields
and ``tfmkit.training.build_training`` uses ``param_groups``, :func:`install` adds them to the
running process (subclasses swapped into ``tfmkit.config``, a wrapper of ``build_training``).
It does nothing for a field that already exists, so the script keeps working afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass


def install() -> list[str]:
    """Add the missing fields; returns the names of the shims installed."""
    import torch

    import tfmkit.config as C
    import tfmkit.training as T
    from tfmkit.data.masking import RevealSpec
    from tfmkit.optim import param_groups

    done = []
    if "zero_fraction" not in C.DataConfig.__dataclass_fields__:
        @dataclass
        class DataConfig(C.DataConfig):
            zero_fraction: float = 0.0
            """Fraction of revealed tokens given to observable zeros (with expressed_only)."""

            @property
            def reveal(self) -> RevealSpec:
                return RevealSpec(n_revealed=self.n_revealed, tau=self.tau,
                                  expressed_only=self.expressed_only, zero_fraction=self.zero_fraction)

        C.DataConfig = DataConfig
        done.append("data.zero_fraction")
    if "decay" not in C.TrainConfig.__dataclass_fields__:
        @dataclass
        class TrainConfig(C.TrainConfig):
            decay: str = "all"
            """Weight decay on ``all`` parameters (TxFM) or only weight ``matrices``."""

        C.TrainConfig = TrainConfig
        original = T.build_training

        def build_training(cfg, n_genes, device, vocab=None):
            state = original(cfg, n_genes, device, vocab)
            if getattr(cfg.train, "decay", "all") == "matrices":
                t = cfg.train
                wd = t.weight_decay if t.weight_decay is not None else 1.0 / (t.lr * t.steps)
                impl = {"fused": True} if device.type == "cuda" else {"foreach": False}
                state.optimizer = torch.optim.AdamW(param_groups(state.model, state.task, wd), lr=t.lr,
                                                    betas=tuple(t.betas), eps=t.eps, **impl)
                state.scheduler = torch.optim.lr_scheduler.LambdaLR(
                    state.optimizer, T.OneCycleCosine(t.steps, t.warmup_frac))
            return state

        T.build_training = build_training
        done.append("train.decay")
    return done
