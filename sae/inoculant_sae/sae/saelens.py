"""SAELens format: a folder with `cfg.json` and `sae_weights.safetensors` holding `W_enc` [d, F], `b_enc` [F],
`W_dec` [F, d], `b_dec` [d], and `threshold` [F] for JumpReLU. Architectures: standard, topk, jumprelu.

The hooked block comes from `hook_name` (`blocks.N.hook_resid_post` is block N's output; `hook_resid_pre` of
block N is block N-1's output; Hugging Face style `model.layers.N` is block N's output).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ._files import positive_int, read_json, require_file, tensor
from .types import Architecture, SAEConfig, SAEWeights

_ARCHITECTURES = {
    "standard": Architecture.STANDARD,
    "topk": Architecture.TOPK,
    "jumprelu": Architecture.JUMPRELU,
}

_RESID_POST = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")
_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")
_HF_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)$")


def _block(cfg: dict[str, Any], path: Path) -> int | None:
    hook = cfg.get("hook_name")
    if not isinstance(hook, str):
        return None
    if m := _RESID_POST.match(hook) or _HF_LAYER.match(hook):
        return int(m.group(1))
    if m := _RESID_PRE.match(hook):
        block = int(m.group(1)) - 1
        if block < 0:
            raise UserError(f"{path}: {hook} is the embedding output, not a block's residual stream")
        return block
    raise UserError(f"{path}: hook {hook!r} is not a residual-stream hook; only residual-stream SAEs are supported")


def _k(cfg: dict[str, Any], path: Path) -> int:
    kwargs = cfg.get("activation_fn_kwargs")
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    return positive_int(k, path, "k (or activation_fn_kwargs.k)")


def read_config(folder: Path) -> SAEConfig:
    cfg_path = folder / "cfg.json"
    cfg = read_json(cfg_path, f"a SAELens SAE folder holds cfg.json and sae_weights.safetensors; is {folder} one?")
    name = cfg.get("architecture") or ("topk" if cfg.get("activation_fn_str") == "topk" else "standard")
    if name not in _ARCHITECTURES:
        raise UserError(f"{cfg_path}: architecture {name!r} is not supported; supported: {', '.join(_ARCHITECTURES)}")
    normalize = cfg.get("normalize_activations")
    if normalize not in (None, "none"):
        raise UserError(f"{cfg_path}: normalize_activations {normalize!r} is not supported (only 'none')")
    architecture = _ARCHITECTURES[name]
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    return SAEConfig(
        format="saelens",
        path=folder,
        weights_file=require_file(
            folder / "sae_weights.safetensors",
            f"the SAE's weights belong beside {cfg_path.name}; point sae.path at the folder that holds both, "
            "or finish the download",
        ),
        d_in=positive_int(cfg.get("d_in"), cfg_path, "d_in"),
        d_sae=positive_int(cfg.get("d_sae"), cfg_path, "d_sae"),
        architecture=architecture,
        k=_k(cfg, cfg_path) if architecture is Architecture.TOPK else None,
        block=_block(cfg, cfg_path),
        model_name=cfg.get("model_name") if isinstance(cfg.get("model_name"), str) else None,
        apply_b_dec_to_input=bool(apply_b_dec),
    )


def read_weights(config: SAEConfig) -> SAEWeights:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = config.weights_file
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read {path} as safetensors: {exc}") from exc
    d, f = config.d_in, config.d_sae
    return SAEWeights(
        W_enc=tensor(state, "W_enc", (d, f), path),
        b_enc=tensor(state, "b_enc", (f,), path),
        W_dec=tensor(state, "W_dec", (f, d), path),
        b_dec=tensor(state, "b_dec", (d,), path),
        threshold=tensor(state, "threshold", (f,), path) if config.architecture is Architecture.JUMPRELU else None,
    )
