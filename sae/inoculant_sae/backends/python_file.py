"""Plug-in backend: a user's Python file that defines `load_backend(options, device)` returning a ModelBackend.

For models transformers cannot load (or tiny test models). The file is imported by path under a module name
derived from its path, so two plug-ins with the same file name do not collide.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .base import ModelBackend


def load_python_backend(file: Path, options: dict[str, Any], device: torch.device) -> ModelBackend:
    if not file.is_file():
        raise UserError(f"model plug-in file {file} does not exist: set model.file to a Python file path")
    name = "inoculant_plugin_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UserError(f"model plug-in file {file} cannot be imported as Python (does it end in .py?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"importing model plug-in {file} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, "load_backend", None)
    if not callable(factory):
        raise UserError(f"model plug-in {file} must define load_backend(options, device) returning a ModelBackend")
    backend = factory(options, device)
    if not isinstance(backend, ModelBackend):
        raise UserError(
            f"load_backend in {file} returned {type(backend).__name__}, not an inoculant_sae.backends.base.ModelBackend"
        )
    return backend
