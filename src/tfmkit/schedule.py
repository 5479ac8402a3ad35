"""Learning-rate schedule of the training loop (TxFM §A.1)."""

from __future__ import annotations

import math


class OneCycleCosine:
    """One-cycle schedule as a multiplier of the peak lr (TxFM §A.1): linear warm-up from
    ``1/div`` to 1 over ``ceil(warmup_frac * steps)`` steps, then cosine decay to ``1/(div*final_div)``.

    Written out (rather than ``torch.optim.lr_scheduler.OneCycleLR``) because OneCycleLR fails
    for runs shorter than ~20 steps and drives momentum, which AdamW's betas already cover.
    """

    def __init__(self, steps: int, warmup_frac: float = 0.1, div: float = 25.0,
                 final_div: float = 1e4) -> None:
        self.steps = max(int(steps), 1)
        self.warmup = max(math.ceil(warmup_frac * self.steps), 1) if warmup_frac > 0 else 0
        self.start, self.end = 1.0 / div, 1.0 / (div * final_div)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        span = max(self.steps - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))
