"""Loaded models and SAEs, kept between jobs: a pipeline sends diff then harvest on the same model, and loading
a 7B model takes longer than many jobs. One backend and one SAE are kept (the last used)."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..backends.base import ModelBackend
from ..backends.loading import load_backend, model_identity
from ..fingerprint import fingerprint_dir, stable_hash
from ..params import ModelSpec, SAESpec
from ..sae.loaders import load_sae, read_sae_config
from ..sae.model import SAE
from ..sae.types import SAEConfig


class Resources(Protocol):
    def model_identity(self, spec: ModelSpec) -> dict[str, Any]: ...

    def sae_identity(self, spec: SAESpec) -> dict[str, Any]: ...

    def sae_config(self, spec: SAESpec) -> SAEConfig: ...

    def backend(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype | None, block: int) -> ModelBackend: ...

    def sae(self, spec: SAESpec, config: SAEConfig, device: torch.device) -> SAE: ...


class LoadingResources:
    def __init__(self) -> None:
        self._backend: tuple[str, int, ModelBackend] | None = None  # (key, highest loaded block, backend)
        self._sae: tuple[str, SAE] | None = None

    def model_identity(self, spec: ModelSpec) -> dict[str, Any]:
        return model_identity(spec)

    def sae_identity(self, spec: SAESpec) -> dict[str, Any]:
        return {"format": spec.format, "path": str(spec.path.resolve()), "files": fingerprint_dir(spec.path)}

    def sae_config(self, spec: SAESpec) -> SAEConfig:
        return read_sae_config(spec.format, spec.path)

    def backend(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype | None, block: int) -> ModelBackend:
        key = stable_hash([repr(spec), str(device), str(dtype)])
        if self._backend is not None and self._backend[0] == key and block <= self._backend[1]:
            return self._backend[2]
        self._backend = None
        _release(device)
        backend = load_backend(spec, device, dtype, block)
        self._backend = (key, block, backend)
        return backend

    def sae(self, spec: SAESpec, config: SAEConfig, device: torch.device) -> SAE:
        key = stable_hash([repr(spec), repr(config), str(device)])
        if self._sae is not None and self._sae[0] == key:
            return self._sae[1]
        self._sae = None
        _release(device)
        sae = load_sae(config, spec.encode, device)
        self._sae = (key, sae)
        return sae


def _release(device: torch.device) -> None:
    """Give the memory of a dropped model back before loading the next one."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
