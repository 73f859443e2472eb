"""Helpers the format loaders share: reading a JSON config and checking tensor shapes, with user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path} not found: {what}")
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    require_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def positive_int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def tensor(state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    if key not in state:
        raise UserError(f"{path} has no tensor {key!r} (it has: {', '.join(sorted(state))})")
    value = state[key]
    if tuple(value.shape) != shape:
        raise UserError(
            f"{path}: {key} has shape {list(value.shape)}, but the config says {list(shape)}; "
            "the weights and the config are from different SAEs"
        )
    return value.to(torch.float32)
