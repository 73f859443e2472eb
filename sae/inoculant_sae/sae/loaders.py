"""The table of SAE formats: each format is a config reader and a weights reader that normalise to
(`SAEConfig`, `SAEWeights`), so everything after loading is format-independent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import dictionary_learning, saelens
from .model import SAE
from .types import EncodeMode, SAEConfig, SAEWeights


@dataclass(frozen=True)
class SAEFormat:
    read_config: Callable[[Path], SAEConfig]
    read_weights: Callable[[SAEConfig], SAEWeights]


SAE_FORMATS: dict[str, SAEFormat] = {
    "dictionary_learning": SAEFormat(dictionary_learning.read_config, dictionary_learning.read_weights),
    "saelens": SAEFormat(saelens.read_config, saelens.read_weights),
}


def read_sae_config(fmt: str, folder: Path) -> SAEConfig:
    return SAE_FORMATS[fmt].read_config(folder)


def load_sae(config: SAEConfig, mode: EncodeMode, device: torch.device) -> SAE:
    return SAE(config, SAE_FORMATS[config.format].read_weights(config), mode, device)
