"""Mixed precision: autocast for the forward pass, and a GradScaler for fp16, whose narrow exponent range
underflows small gradients unless the loss is scaled up first (bf16 has fp32's range and needs none)."""
from __future__ import annotations

from contextlib import nullcontext

import torch

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def autocast(device: torch.device, precision: str):
    """A context-manager factory: autocast to bf16/fp16 on `device`, or nothing for "32"."""
    if precision == "32":
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(device.type) if precision == "16" else None
