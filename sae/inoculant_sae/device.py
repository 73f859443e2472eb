"""Device and dtype resolution: CUDA when asked or available, bf16 on CUDA and fp32 on CPU by default."""

from __future__ import annotations

import torch

from .errors import UserError

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} was asked for, but this torch build sees no CUDA GPU; use 'cpu' or 'auto'"
            )
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
        device = torch.device("cuda", index)
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def prepare(device: torch.device) -> None:
    """On CUDA the SAE runs its float32 matmuls on TF32 tensor cores: its input is the bf16 residual, which TF32
    holds exactly, and fp32 without tensor cores would make the SAE encode slower than the model itself."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
