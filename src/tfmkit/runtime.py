"""Where and how training runs: device choice, precision (autocast) and the DDP process group.

SPEC §5: fp32 on CPU (bf16 matmul is ~100x slower on many CPUs), bf16 autocast on GPU; the same
config runs as one process or under ``torchrun`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from tfmkit.errors import TfmkitError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str = "auto"):
    """bf16 autocast on GPU, fp32 on CPU (bf16 matmul is ~100x slower on many CPUs)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return nullcontext()
    if precision in ("auto", "bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise TfmkitError(f"unknown precision {precision!r}; use auto, fp32 or bf16")


def init_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """Join a ``torchrun`` process group if ``WORLD_SIZE > 1`` -> ``(rank, world_size, device)``.

    NCCL on GPUs (one device per ``LOCAL_RANK``), gloo on CPU; a single process is rank 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device
