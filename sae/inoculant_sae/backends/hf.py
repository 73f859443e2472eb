"""Hugging Face transformers backend: a local snapshot directory (config.json, weights, tokenizer files).

Only the blocks up to the hooked one are loaded (the config is truncated before the weights are read, so the
later blocks' weights are skipped), and the forward is stopped by an exception raised from a hook on the hooked
block, so neither later blocks, the final norm nor an LM head ever run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..errors import UserError
from .base import ChatMessage, ModelBackend, TokenBatch, TokenizedSequence, with_default_system

# Where decoder blocks live in the base models that AutoModel returns (first match wins).
_BLOCK_PATHS = ("layers", "h", "blocks", "decoder.layers", "language_model.layers", "model.layers", "transformer.h")


class _StopForward(Exception):
    """Raised from the hooked block's forward hook to end the forward there."""


def find_blocks(model: nn.Module) -> nn.ModuleList:
    for path in _BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise UserError(
        f"cannot find the transformer blocks of {type(model).__name__} (looked for {', '.join(_BLOCK_PATHS)}); "
        "use a Python plug-in backend for this model"
    )


def run_to_block(model: nn.Module, blocks: nn.ModuleList, batch: TokenBatch, block: int) -> torch.Tensor:
    """Residual-stream output of `blocks[block]`, stopping the forward right after it."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = blocks[block].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"block {block} never ran in {type(model).__name__}.forward")
    return captured[0]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading a truncated model reports the skipped later blocks as unexpected keys: expected, so muted, and
    so is the progress bar (stderr is the sidecar's log, where a bar is noise)."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
        if bars:
            logging.enable_progress_bar()


def locate_response(rendered: str, prompt_rendered: str, content: str) -> tuple[int, int]:
    """Character span of the assistant content inside the rendered chat.

    Searching starts after the part shared with the rendered prompt, so text of the prompt that equals the
    response is never taken for it. Templates may strip the content (Qwen3 strips leading newlines), hence the
    stripped fallback.
    """
    start = 0
    for a, b in zip(rendered, prompt_rendered, strict=False):
        if a != b:
            break
        start += 1
    for needle in (content, content.strip()):
        if needle:
            at = rendered.find(needle, start)
            if at >= 0:
                return at, at + len(needle)
    raise ValueError("the chat template changed the assistant text, so its tokens cannot be located")


class HFBackend(ModelBackend):
    def __init__(self, model: nn.Module, tokenizer: Any, num_blocks: int, source: str) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._blocks = find_blocks(model)
        self._num_blocks = num_blocks
        self._source = source
        self._special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        self._hidden_size = int(cast(Any, model).config.hidden_size)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype, max_block: int) -> HFBackend:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if not (path / "config.json").is_file():
            raise UserError(
                f"model path {path} has no config.json: pass the local directory of a Hugging Face snapshot"
            )
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot read the model config in {path}: {exc}") from exc
        num_blocks = getattr(config, "num_hidden_layers", None)
        if not isinstance(num_blocks, int):
            raise UserError(f"config.json in {path} has no num_hidden_layers: not a decoder model this backend knows")
        if not 0 <= max_block < num_blocks:
            raise UserError(
                f"block {max_block} is out of range: the model in {path} has {num_blocks} blocks "
                f"(0..{num_blocks - 1}); set `block` (or the SAE's layer) to one of them"
            )
        truncated = copy.deepcopy(config)
        truncated.num_hidden_layers = max_block + 1
        layer_types = getattr(truncated, "layer_types", None)
        if isinstance(layer_types, list):
            truncated.layer_types = layer_types[: max_block + 1]
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the tokenizer in {path}: {exc}") from exc
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(path, config=truncated, dtype=dtype, output_loading_info=True)
        missing = sorted(info.get("missing_keys", []))
        mismatched = sorted(str(k) for k in info.get("mismatched_keys", []))
        if missing or mismatched:
            first = missing[0] if missing else mismatched[0]
            raise UserError(
                f"the weights in {path} do not fit its config.json ({len(missing)} tensors missing, "
                f"{len(mismatched)} of the wrong shape; first: {first}): the snapshot is incomplete or corrupt"
            )
        model.to(device).eval()
        return cls(model, tokenizer, num_blocks, str(path))

    @property
    def hidden_size(self) -> int:
        return self._hidden_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def model(self) -> nn.Module:
        return self._model

    def _render(self, messages: list[ChatMessage], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            text = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except (ValueError, TemplateError) as exc:
            # No chat template, or the template refuses the conversation (e.g. roles that do not alternate).
            raise UserError(
                f"the chat template of the tokenizer in {self._source} cannot render a chat: {exc}"
            ) from exc
        return str(text)

    def _encode(self, text: str, span: tuple[int, int] | None, add_special_tokens: bool) -> TokenizedSequence:
        enc = self._tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids = [int(i) for i in enc["input_ids"]]
        if span is None:
            response = [False] * len(ids)
        else:
            lo, hi = span
            # A token is part of the response when its characters overlap the response span.
            response = [s < hi and e > lo and e > s for s, e in enc["offset_mapping"]]
        special = [i in self._special_ids for i in ids]
        return TokenizedSequence(tuple(ids), tuple(response), tuple(special))

    def tokenize_chat(self, messages: Sequence[ChatMessage], system_prompt: str | None) -> TokenizedSequence:
        full = with_default_system(messages, system_prompt)
        rendered = self._render(full, add_generation_prompt=False)
        span = None
        if full and full[-1]["role"] == "assistant" and full[-1]["content"]:
            prompt_rendered = self._render(full[:-1], add_generation_prompt=True) if len(full) > 1 else ""
            try:
                span = locate_response(rendered, prompt_rendered, full[-1]["content"])
            except ValueError as exc:
                raise UserError(f"{exc} (tokenizer in {self._source})") from exc
        # The rendered chat already holds every special token the template wants.
        return self._encode(rendered, span, add_special_tokens=False)

    def tokenize_text(self, text: str) -> TokenizedSequence:
        return self._encode(text, None, add_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.decode([i]) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids)))

    def residual(self, batch: TokenBatch, block: int) -> torch.Tensor:
        if not 0 <= block < len(self._blocks):
            raise ValueError(f"block {block} was not loaded (loaded blocks 0..{len(self._blocks) - 1})")
        return run_to_block(self._model, self._blocks, batch, block)
