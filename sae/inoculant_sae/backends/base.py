"""The one interface every model backend implements, and the token containers the jobs pass around.

A backend turns chats into token ids (with the model's own chat template) and runs the model up to a block,
returning that block's residual-stream output. Custom models plug in through a Python file whose
`load_backend(options, device)` returns a `ModelBackend` (see `inoculant_sae.testing.planted` for a complete
example).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class TokenizedSequence:
    """One tokenized sequence and, per token, whether it belongs to the final assistant response and whether it
    is a special token of the tokenizer (`<|im_start|>`, `<|im_end|>`, ...)."""

    input_ids: tuple[int, ...]
    response_mask: tuple[bool, ...]
    special_mask: tuple[bool, ...]

    def __post_init__(self) -> None:
        if not len(self.input_ids) == len(self.response_mask) == len(self.special_mask):
            raise ValueError(
                f"mask lengths differ: ids {len(self.input_ids)}, response {len(self.response_mask)}, "
                f"special {len(self.special_mask)}"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    def truncated(self, length: int) -> TokenizedSequence:
        return TokenizedSequence(self.input_ids[:length], self.response_mask[:length], self.special_mask[:length])


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded batch on the model's device. Right padding keeps every real token at the position it has
    alone, so a causal model gives each row the same residuals as an unpadded forward."""

    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64, 1 on real tokens
    response_mask: torch.Tensor  # [B, T] bool
    special_mask: torch.Tensor  # [B, T] bool

    @property
    def valid(self) -> torch.Tensor:
        return self.attention_mask.bool()

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.attention_mask.sum(dim=1).tolist()]


def make_batch(seqs: Sequence[TokenizedSequence], pad_id: int, device: torch.device) -> TokenBatch:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.bool)
    special = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, seq in enumerate(seqs):
        n = len(seq)
        ids[i, :n] = torch.tensor(seq.input_ids, dtype=torch.long)
        attention[i, :n] = 1
        response[i, :n] = torch.tensor(seq.response_mask, dtype=torch.bool)
        special[i, :n] = torch.tensor(seq.special_mask, dtype=torch.bool)
    return TokenBatch(ids.to(device), attention.to(device), response.to(device), special.to(device))


def with_default_system(messages: Sequence[ChatMessage], system_prompt: str | None) -> list[ChatMessage]:
    """Put the default system prompt in front of a conversation that has none (Qwen2.5's template would insert
    its own default; an explicit one makes every backend and template behave the same)."""
    out = list(messages)
    if system_prompt is not None and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


class ModelBackend(ABC):
    """A language model seen as: chat -> tokens -> residual stream output of a block."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the residual stream (must equal the SAE's d_in)."""

    @property
    @abstractmethod
    def num_blocks(self) -> int:
        """Number of transformer blocks of the full model (valid `block` values are 0..num_blocks-1)."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def pad_id(self) -> int:
        """Token id used for padding (never attended to: the attention mask hides it)."""

    @abstractmethod
    def tokenize_chat(self, messages: Sequence[ChatMessage], system_prompt: str | None) -> TokenizedSequence:
        """Render `messages` with the model's chat template, after `with_default_system`. When the last message
        is the assistant's, the tokens of its content are marked in `response_mask`."""

    @abstractmethod
    def tokenize_text(self, text: str) -> TokenizedSequence:
        """Plain text (pretraining-style corpora), with whatever the tokenizer adds by itself (a BOS token for
        models that have one); `response_mask` is all false."""

    @abstractmethod
    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each token decoded on its own (for showing per-token activations)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The tokens decoded together (multi-byte characters split across tokens come out whole)."""

    @abstractmethod
    def residual(self, batch: TokenBatch, block: int) -> torch.Tensor:
        """[B, T, hidden_size] residual-stream output of block `block` (0-indexed; Hugging Face
        `hidden_states[block + 1]`). Must not run the blocks after `block`, nor a final norm or head."""
