"""Load a backend by `model.backend`, and the cheap identity of a model used in cache keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..fingerprint import fingerprint_dir, fingerprint_file
from ..params import HFModelSpec, ModelSpec, PythonModelSpec
from .base import ModelBackend


def load_backend(spec: ModelSpec, device: torch.device, dtype: torch.dtype | None, max_block: int) -> ModelBackend:
    """Load the model for a job that hooks blocks up to `max_block`; `dtype` is for Hugging Face models (a
    plug-in picks its own)."""
    if isinstance(spec, HFModelSpec):
        assert dtype is not None
        # Imported here: transformers takes seconds to import and plug-in jobs never need it.
        from .hf import HFBackend

        return HFBackend.load(spec.path, device, dtype, max_block)
    from .python_file import load_python_backend

    return load_python_backend(spec.file, spec.options, device)


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What the residuals depend on, read without loading the model (cache keys)."""
    if isinstance(spec, HFModelSpec):
        return {"backend": "hf", "path": str(Path(spec.path).resolve()), "files": fingerprint_dir(spec.path)}
    assert isinstance(spec, PythonModelSpec)
    return {
        "backend": "python",
        "file": str(spec.file.resolve()),
        "content": fingerprint_file(spec.file),
        "options": spec.options,
    }
