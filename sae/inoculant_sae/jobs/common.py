"""What both jobs do: resolve device, dtype, SAE config and block; load and cross-check the model and the SAE;
run a batch to the hooked block and select the tokens that count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..backends.base import ModelBackend, TokenBatch
from ..device import dtype_name, prepare, resolve_device, resolve_dtype
from ..errors import UserError
from ..params import HFModelSpec, ModelSpec, SAESpec
from ..pooling import PoolingOptions, TokenSelection, select_tokens
from ..sae.model import SAE
from ..sae.types import SAEConfig
from .resources import Resources

# Tokens encoded per SAE call: bounds the dense [tokens, d_sae] float32 activations to 2**27 values (512 MB),
# 1024 tokens for a 131,072-wide SAE.
_ENCODE_VALUES = 2**27


@dataclass(frozen=True)
class Target:
    """A job's resolved execution target."""

    device: torch.device
    dtype: torch.dtype | None  # None: a Python plug-in picks its own
    sae_config: SAEConfig
    block: int

    def describe(self, spec: SAESpec) -> dict[str, Any]:
        config = self.sae_config
        return {
            "device": str(self.device),
            "dtype": dtype_name(self.dtype) if self.dtype is not None else "set by the plug-in",
            "fp32_matmul": "tf32" if self.device.type == "cuda" else "ieee",
            "block": self.block,
            "hook": f"residual stream output of block {self.block} (hidden_states[{self.block + 1}])",
            "encode": spec.encode.value,
            "sae": {
                "format": config.format,
                "path": str(config.path),
                "architecture": config.architecture.value,
                "d_in": config.d_in,
                "d_sae": config.d_sae,
                "k": config.k,
                "block": config.block,
                "model_name": config.model_name,
            },
        }


def resolve_target(model: ModelSpec, device_name: str, sae: SAESpec, block: int | None, resources: Resources) -> Target:
    device = resolve_device(device_name)
    prepare(device)
    dtype = resolve_dtype(model.dtype, device) if isinstance(model, HFModelSpec) else None
    config = resources.sae_config(sae)
    if block is not None and config.block is not None and block != config.block:
        # Reading another block's residual with this SAE gives latents that mean nothing, without any error.
        raise UserError(
            f"sae.block {block} disagrees with the SAE in {sae.path}, whose config says it was trained on block "
            f"{config.block}: leave sae.block out to use the SAE's own, or set it to {config.block}"
        )
    chosen = block if block is not None else config.block
    if chosen is None:
        raise UserError(f"the SAE config in {sae.path} names no layer: set sae.block to the hooked block")
    return Target(device, dtype, config, chosen)


def activation_identity(
    model: ModelSpec,
    sae: SAESpec,
    target: Target,
    pooling: PoolingOptions,
    system_prompt: str | None,
    resources: Resources,
) -> dict[str, Any]:
    """What a job's SAE activations depend on, for its cache keys: the model and SAE files, the encode, the hooked
    block, the dtype, which tokens count and the system prompt the chats are rendered with."""
    return {
        "model": resources.model_identity(model),
        "sae": resources.sae_identity(sae),
        "encode": sae.encode.value,
        "block": target.block,
        "dtype": str(target.dtype),
        "pooling": pooling.as_dict(),
        "system_prompt": system_prompt,
    }


def load_models(model: ModelSpec, sae_spec: SAESpec, target: Target, resources: Resources) -> tuple[ModelBackend, SAE]:
    backend = resources.backend(model, target.device, target.dtype, target.block)
    if not 0 <= target.block < backend.num_blocks:
        raise UserError(
            f"block {target.block} is out of range: the model has {backend.num_blocks} blocks "
            f"(0..{backend.num_blocks - 1}); "
            + (
                f"the SAE's config names block {target.block}, so this SAE was trained on another model"
                if target.sae_config.block == target.block
                else "set sae.block to one of them"
            )
        )
    if backend.hidden_size != target.sae_config.d_in:
        raise UserError(
            f"the SAE in {sae_spec.path} reads {target.sae_config.d_in}-wide activations but the model's residual "
            f"stream is {backend.hidden_size} wide: this SAE was trained on another model "
            f"({target.sae_config.model_name or 'model not named in its config'}); use an SAE trained on this model"
        )
    return backend, resources.sae(sae_spec, target.sae_config, target.device)


def encode_chunk_tokens(sae: SAE) -> int:
    return max(1, _ENCODE_VALUES // sae.d_sae)


def run_block(backend: ModelBackend, batch: TokenBatch, block: int, token_budget: int) -> torch.Tensor:
    try:
        return backend.residual(batch, block)
    except torch.cuda.OutOfMemoryError as exc:
        shape = tuple(batch.input_ids.shape)
        raise UserError(
            f"out of GPU memory on a batch of shape {shape} (token_budget {token_budget}): lower token_budget"
        ) from exc


def forward_and_select(
    backend: ModelBackend, batch: TokenBatch, block: int, options: PoolingOptions, token_budget: int
) -> tuple[torch.Tensor, TokenSelection]:
    """Residual [B, T, d] of the hooked block and the tokens that count under `options`."""
    resid = run_block(backend, batch, block, token_budget)
    norms = torch.linalg.vector_norm(resid, dim=-1, dtype=torch.float32)
    return resid, select_tokens(batch.valid, batch.response_mask, batch.special_mask, norms, options)
