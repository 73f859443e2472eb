"""Names shared by the SAE interface, its loaders and the job parameters."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch


class Architecture(StrEnum):
    STANDARD = "standard"  # ReLU
    TOPK = "topk"  # keep the k largest per token
    BATCHTOPK = "batchtopk"  # trained with batch top-k; at inference ReLU then a learned global threshold
    JUMPRELU = "jumprelu"  # ReLU then a learned per-latent threshold


class EncodeMode(StrEnum):
    """`threshold`: the SAE's faithful inference encode (thresholds of BatchTopK and JumpReLU kept).
    `relu`: thresholds dropped, plain ReLU of the pre-activations; this is how SAELens loads the
    dictionary_learning BatchTopK SAEs, so it reproduces results computed that way.
    A TopK SAE keeps its top k per token in both modes: k is its architecture, not an inference threshold."""

    THRESHOLD = "threshold"
    RELU = "relu"


@dataclass(frozen=True)
class SAEConfig:
    """What a loader reads from the config file alone (cheap: used for cache keys before any weights load)."""

    format: str
    path: Path  # the SAE's folder
    weights_file: Path
    d_in: int
    d_sae: int
    architecture: Architecture
    k: int | None  # TopK only
    block: int | None  # residual-stream output of this 0-indexed block, when the config says
    model_name: str | None
    apply_b_dec_to_input: bool  # subtract b_dec from the input before encoding


@dataclass(frozen=True)
class SAEWeights:
    """Normalised weights: every loader converts its format's tensors to these shapes, float32 on CPU."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    threshold: torch.Tensor | None  # [] (one global threshold) or [d_sae]; None when the SAE has none
