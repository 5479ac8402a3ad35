"""Perturbation-prediction fine-tuning (GPL §4.6; issue 9 item 3).

Each training example is one perturbed cell: a perturbation token for its target gene, then a
random subsequence of the cell's expression (:mod:`tfmkit.data.collate_perturbation`). The
pretraining head is replaced by a fresh MLP, ``d_in -> 4d -> SiLU -> G + 1``: ``G`` per-gene
logits ``z`` and one log-total ``s``. Its input is the cell state ``h_cls`` (``d_in = d``, GPL) or,
with ``token_readout`` (the default; ours), ``[h_cls; h_pert]`` (``d_in = 2d``), where ``h_pert``
is the encoder's output at the perturbation token (zeros for a control cell, which has none). On
the simulated screen the CLS-only head learned predicted effects ~30x smaller than the observed
ones (the single token's signal is diluted among the ``K`` revealed genes); the direct path lets
the head read which gene was perturbed. The loss is the KL divergence between the
observed and predicted profiles in log1p-normalised proportion space,

    ``p_g = y_g / sum_h y_h``,  ``y = log1p(1e4 * counts / library)``  (observed, VCC space)
    ``q = softmax(z)`` over the cell's observable genes,
    ``loss = KL(p || q) + scale_weight * (log sum_h y_h - s)^2``,

and the predicted profile is ``y_hat = exp(s) q``. The second term (not in GPL's text, which
states only the KL) learns the total log1p mass that turns proportions back into the
log1p-normalised expression the metrics compare. The readout layer starts at zero weight
(muP's zero readout) with its bias set from the first training batch (``log`` mean proportions
and mean ``log`` total, ActNorm-style data-dependent init, saved with the head).

Only the ``cell`` (and ``token_states``) outputs are read; the loop calls ``model.encode_cells``. Options live in
``train.task_kwargs`` (written by :func:`tfmkit.finetune.perturbation.finetune_perturbation`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tfmkit.errors import TfmkitError
from tfmkit.tasks.base import TASKS, Task
from tfmkit.tasks.finetuning import parent_task, stratified_split, task_options


@TASKS.register("perturbation")
class PerturbationTask(Task):
    """Predict a perturbed cell's whole profile from a perturbation token and a subsequence.

    Parameters
    ----------
    base
        The parent model's task (its inference collator samples the subsequence); not a
        submodule.
    dim, n_genes
        Width ``d`` of the cell state and vocabulary size ``G``.
    perturbation_key
        ``obs`` column of the perturbation label (the target gene symbol).
    target_index
        ``{perturbation label: vocabulary gene index}`` of the training perturbations.
    n_revealed
        Genes of the cell shown after the perturbation token (``K``).
    target_sum
        Normalisation target of the observed profiles (``1e4``).
    scale_weight
        Weight of the log-total term.
    token_readout
        Feed the perturbation token's output state to the head beside the CLS state (module doc).
    """

    name = "perturbation"
    encoder_only = True

    def __init__(self, base: Task, dim: int, n_genes: int, perturbation_key: str, target_index: dict, *,
                 n_revealed: int = 256, target_sum: float = 1e4, scale_weight: float = 1.0,
                 token_readout: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "_base", base)  # collators only; not a submodule
        self.n_genes, self.perturbation_key = int(n_genes), perturbation_key
        self.target_index = {str(k): int(v) for k, v in dict(target_index).items()}
        self.n_revealed, self.target_sum, self.scale_weight = int(n_revealed), float(target_sum), float(scale_weight)
        self.token_readout = bool(token_readout)
        d_in = (2 if self.token_readout else 1) * dim
        self.head = nn.Sequential(nn.Linear(d_in, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, self.n_genes + 1))
        nn.init.zeros_(self.head[2].weight)  # muP zero readout; bias set from the first batch
        nn.init.zeros_(self.head[2].bias)
        self.register_buffer("bias_initialised", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg, n_genes: int) -> "PerturbationTask":
        from tfmkit.data import keys as K
        from tfmkit.models.build import family_class

        kw = task_options(cfg, cls.name, {"perturbation_key", "target_index"}, "`tfmkit finetune perturbation`")
        if K.VALUES not in family_class(cfg.model.family).batch_fields:
            raise TfmkitError(f"perturbation fine-tuning puts the perturbation code in the expression value "
                              f"of a token; model family {cfg.model.family!r} reads no values (use txfm or bmfm)")
        base = parent_task(cfg, n_genes, kw)
        keep = {"n_revealed", "target_sum", "scale_weight", "token_readout"}
        return cls(base, int(cfg.model.dim), n_genes, kw["perturbation_key"], kw["target_index"],
                   **{k: v for k, v in kw.items() if k in keep})

    @classmethod
    def required_outputs(cls, cfg) -> frozenset[str]:
        token = dict(cfg.train.task_kwargs).get("token_readout", True)
        return frozenset({"cell", "token_states"} if token else {"cell"})

    def store_targets(self, store) -> np.ndarray:
        """``(n_cells,)`` vocabulary gene index of each store cell's perturbation (``-1`` when the
        label is not a training perturbation, e.g. a control)."""
        labels = store.obs[self.perturbation_key].astype(str).to_numpy()
        return np.array([self.target_index.get(v, -1) for v in labels], dtype=np.int64)

    def collator(self, store, targets=None):
        """Training / prediction batches; ``targets`` overrides each cell's perturbation (an int
        applies one perturbation to every cell)."""
        from tfmkit.data.collate_perturbation import PerturbationCollator

        base = self._base.inference_collator(store, self.n_revealed)
        return PerturbationCollator(base, self.store_targets(store) if targets is None else targets,
                                    self.target_sum)

    def inference_collator(self, store, n_revealed: int | None = None):
        """Embedding batches (``tfmkit embed``): the cell without a perturbation token."""
        from tfmkit.data.collate_perturbation import PerturbationCollator

        base = self._base.inference_collator(store, n_revealed or self.n_revealed)
        return PerturbationCollator(base, -1, self.target_sum)

    def split(self, store, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation cells stratified by perturbation (``round(val_fraction * n_p)`` of each)."""
        codes = np.unique(store.obs[self.perturbation_key].astype(str).to_numpy(), return_inverse=True)[1]
        return stratified_split(codes, val_fraction, seed)

    def head_input(self, output, pert_gene: torch.Tensor) -> torch.Tensor:
        """``(B, d_in)`` head input: the cell state, then (``token_readout``) the output state of
        the perturbation token (position 0 of ``token_states``; zeros where ``pert_gene < 0``)."""
        cell = output.cell.float()  # (B, d)
        if not self.token_readout:
            return cell
        tok = output.token_states[:, 0].float() * (pert_gene >= 0).to(cell.dtype)[:, None]  # (B, d)
        return torch.cat([cell, tok], dim=1)  # (B, 2d)

    def outputs(self, output, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q (B, G), s (B,))``: log proportions over the observable genes (``-inf``
        elsewhere) and the predicted log total."""
        from tfmkit.data import keys as K
        from tfmkit.data.collate_perturbation import PERT_GENE

        h = self.head(self.head_input(output, batch[PERT_GENE]))  # (B, G + 1)
        z = h[:, :self.n_genes].masked_fill(~batch[K.OBSERVABLE], float("-inf"))  # (B, G)
        return F.log_softmax(z, dim=-1), h[:, self.n_genes]  # (B, G), (B,)

    def predict(self, output, batch: dict) -> torch.Tensor:
        """``(B, G)`` predicted log1p-normalised profile ``exp(s) q`` (0 on unobservable genes)."""
        logq, s = self.outputs(output, batch)
        return torch.exp(logq + s[:, None])  # (B, G)

    def _init_bias(self, y: torch.Tensor, tot: torch.Tensor, ok: torch.Tensor) -> None:
        with torch.no_grad():
            p = (y[ok] / tot[ok, None]).mean(0)  # (G,)
            self.head[2].bias[:self.n_genes].copy_(torch.log(p + 1e-8))
            self.head[2].bias[self.n_genes] = torch.log(tot[ok]).mean()
            self.bias_initialised.fill_(True)

    def loss(self, output, batch: dict) -> torch.Tensor:
        from tfmkit.data import keys as K
        from tfmkit.data.collate_perturbation import PERT_TARGET

        obs = batch[K.OBSERVABLE]  # (B, G)
        y = batch[PERT_TARGET].float() * obs  # (B, G)
        tot = y.sum(1)  # (B,)
        ok = tot > 0  # (B,)
        if self.training and not bool(self.bias_initialised) and bool(ok.any()):
            self._init_bias(y, tot, ok)
        logq, s = self.outputs(output, batch)  # (B, G), (B,)
        p = y / tot.clamp_min(1e-12)[:, None]  # (B, G)
        kl = (torch.xlogy(p, p) - torch.where(p > 0, p * logq, torch.zeros_like(p))).sum(1)  # (B,)
        scale = (torch.log(tot.clamp_min(1e-12)) - s) ** 2  # (B,)
        return torch.where(ok, kl + self.scale_weight * scale, torch.zeros_like(kl))  # (B,)
