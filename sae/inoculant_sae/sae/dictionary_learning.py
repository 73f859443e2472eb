"""dictionary_learning format (saprmarks/dictionary_learning; the andyrdt Qwen2.5 SAEs): a folder with `ae.pt`
(a state dict) and `config.json` (`trainer.dict_class`, `activation_dim`, `dict_size`, `k`, `layer`,
`lm_name`).

State dict keys: `encoder.weight` [F, d], `encoder.bias` [F], `decoder.weight` [d, F], `b_dec` [d] (named
`bias` in the standard `AutoEncoder`), and the buffers `k` and `threshold` (a scalar) for BatchTopK and TopK.
Input normalisation is already folded into the saved biases and threshold, so raw activations go in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ._files import positive_int, read_json, require_file, tensor
from .types import Architecture, SAEConfig, SAEWeights

_DICT_CLASSES = {
    "BatchTopKSAE": Architecture.BATCHTOPK,
    "AutoEncoderTopK": Architecture.TOPK,
    "AutoEncoder": Architecture.STANDARD,
}


def read_config(folder: Path) -> SAEConfig:
    config_path = folder / "config.json"
    config = read_json(config_path, f"a dictionary_learning SAE folder holds ae.pt and config.json; is {folder} one?")
    trainer = config.get("trainer")
    if not isinstance(trainer, dict):
        raise UserError(f"{config_path} has no 'trainer' object: not a dictionary_learning config")
    dict_class = trainer.get("dict_class")
    if dict_class not in _DICT_CLASSES:
        raise UserError(
            f"{config_path}: dict_class {dict_class!r} is not supported; supported: {', '.join(_DICT_CLASSES)}"
        )
    architecture = _DICT_CLASSES[dict_class]
    layer = trainer.get("layer")
    return SAEConfig(
        format="dictionary_learning",
        path=folder,
        weights_file=require_file(
            folder / "ae.pt",
            f"the SAE's weights belong beside {config_path.name}; point sae.path at the folder that holds both "
            "(e.g. resid_post_layer_15/trainer_1), or finish the download",
        ),
        d_in=positive_int(trainer.get("activation_dim"), config_path, "trainer.activation_dim"),
        d_sae=positive_int(trainer.get("dict_size"), config_path, "trainer.dict_size"),
        architecture=architecture,
        k=positive_int(trainer.get("k"), config_path, "trainer.k") if architecture is Architecture.TOPK else None,
        block=layer if isinstance(layer, int) and not isinstance(layer, bool) else None,
        model_name=trainer.get("lm_name") if isinstance(trainer.get("lm_name"), str) else None,
        apply_b_dec_to_input=True,
    )


def read_weights(config: SAEConfig) -> SAEWeights:
    path = config.weights_file
    try:
        # weights_only: an ae.pt is a plain state dict, and unpickling anything else could run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message runs to a page of advice on weights_only; its first line says what went wrong.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot read {path} as a PyTorch state dict ({first}): the file is damaged or incomplete; "
            "download or copy it again"
        ) from exc
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    d, f = config.d_in, config.d_sae
    b_dec_key = "bias" if config.architecture is Architecture.STANDARD and "b_dec" not in state else "b_dec"
    threshold = state.get("threshold")
    if threshold is not None and threshold.numel() not in (1, f):
        raise UserError(f"{path}: threshold has {threshold.numel()} values; expected 1 or {f}")
    return SAEWeights(
        W_enc=tensor(state, "encoder.weight", (f, d), path).T,
        b_enc=tensor(state, "encoder.bias", (f,), path),
        W_dec=tensor(state, "decoder.weight", (d, f), path).T,
        b_dec=tensor(state, b_dec_key, (d,), path),
        threshold=None
        if threshold is None
        else threshold.to(torch.float32).reshape(() if threshold.numel() == 1 else (f,)),
    )
