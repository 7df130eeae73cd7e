"""Precision rules shared by the model's numerically sensitive steps."""

import torch


def upcast(dtype: torch.dtype) -> torch.dtype:
    """The dtype for steps the released model runs in float32: float32 for
    half-precision inputs, the input's own dtype when it is wider (float64)."""
    return torch.promote_types(dtype, torch.float32)
