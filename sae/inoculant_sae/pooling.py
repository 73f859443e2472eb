"""Which tokens enter a sequence's mean, and the mean itself.

Defaults keep the tokens that carry the text: the first token is dropped (Qwen has no BOS, yet its first token
behaves as an attention sink), special tokens are dropped (chat-template markup), and so is any token whose
residual norm exceeds `outlier_norm_multiple` times the sequence's median norm (Qwen's attention-sink tokens
reach over 100x the median and light up SAE latents that say nothing about the text).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from .backends.base import TokenizedSequence

# Reasons a real (non-padding) token is left out, in the order they are checked: a token is counted under the
# first reason that applies.
DROP_REASONS = ("not_response", "first", "special", "outlier")


@dataclass(frozen=True)
class PoolingOptions:
    tokens: Literal["all", "response"] = "all"
    exclude_first: bool = True
    exclude_special: bool = True
    outlier_norm_multiple: float | None = 100.0
    truncate_to_shorter: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenSelection:
    keep: torch.Tensor  # [B, T] bool
    dropped: dict[str, int]  # per reason in DROP_REASONS


def select_tokens(
    valid: torch.Tensor,
    response: torch.Tensor,
    special: torch.Tensor,
    norms: torch.Tensor,
    options: PoolingOptions,
) -> TokenSelection:
    """All arguments are [B, T]; `valid` is false on padding, `norms` are the residual L2 norms."""
    keep = valid.clone()
    dropped: dict[str, int] = {}

    def drop(reason: str, mask: torch.Tensor) -> None:
        hit = keep & mask
        dropped[reason] = int(hit.sum())
        keep.logical_and_(~mask)

    drop("not_response", ~response if options.tokens == "response" else torch.zeros_like(keep))
    first = torch.zeros_like(keep)
    if options.exclude_first:
        first[:, 0] = True
    drop("first", first)
    drop("special", special if options.exclude_special else torch.zeros_like(keep))
    outlier = torch.zeros_like(keep)
    if options.outlier_norm_multiple is not None:
        # Median over the whole sequence (every real token); torch.nanmedian takes the lower middle value.
        median = norms.float().masked_fill(~valid, float("nan")).nanmedian(dim=1).values
        outlier = norms.float() > options.outlier_norm_multiple * median[:, None]
    drop("outlier", outlier)
    return TokenSelection(keep, dropped)


def truncate_pair(a: TokenizedSequence, b: TokenizedSequence) -> tuple[TokenizedSequence, TokenizedSequence]:
    """Cut both to the shorter length (the reference pipeline's way of comparing target with base)."""
    n = min(len(a), len(b))
    return a.truncated(n), b.truncated(n)


def mean_pool(
    x: torch.Tensor,
    keep: torch.Tensor,
    encode: Callable[[torch.Tensor], torch.Tensor],
    width: int,
    chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over each row's kept tokens of `encode(x[token])`.

    x: [B, T, d]; keep: [B, T]. Only kept tokens are encoded, `chunk_tokens` at a time, so the dense
    [tokens, width] activations never exceed one chunk (a 131k-wide SAE is 0.5 MB per token in float32).
    Returns (means [B, width] float32, counts [B]); a row with no kept token has a zero mean.
    """
    rows, positions = keep.nonzero(as_tuple=True)
    sums = torch.zeros((x.shape[0], width), dtype=torch.float32, device=x.device)
    for start in range(0, rows.numel(), chunk_tokens):
        r = rows[start : start + chunk_tokens]
        sums.index_add_(0, r, encode(x[r, positions[start : start + chunk_tokens]]))
    counts = keep.sum(dim=1)
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts
