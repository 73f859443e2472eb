"""The one SAE interface. Loaders normalise every format to `SAEWeights`, so encode/decode are written once.

pre  = (x - b_dec) @ W_enc + b_enc            (b_dec subtracted when the format says so)
standard          acts = ReLU(pre)
batchtopk/jumprelu acts = ReLU(pre) * (pre > threshold)   in `threshold` mode; ReLU(pre) in `relu` mode
topk              acts = ReLU of the k largest pre per token, zeros elsewhere (both modes)
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .types import Architecture, EncodeMode, SAEConfig, SAEWeights


class SAE:
    def __init__(self, config: SAEConfig, weights: SAEWeights, mode: EncodeMode, device: torch.device) -> None:
        if config.architecture is Architecture.TOPK and config.k is None:
            raise UserError(f"the TopK SAE in {config.path} does not say its k: add k to its config")
        thresholded = config.architecture in (Architecture.BATCHTOPK, Architecture.JUMPRELU)
        if thresholded and mode is EncodeMode.THRESHOLD and weights.threshold is None:
            raise UserError(
                f"{config.weights_file} has no threshold, which encode 'threshold' needs; "
                "use encode 'relu' or a file with the threshold"
            )
        self.config = config
        self.mode = mode
        self.W_enc = weights.W_enc.to(device=device, dtype=torch.float32)
        self.b_enc = weights.b_enc.to(device=device, dtype=torch.float32)
        self.W_dec = weights.W_dec.to(device=device, dtype=torch.float32)
        self.b_dec = weights.b_dec.to(device=device, dtype=torch.float32)
        threshold = (
            weights.threshold.to(device=device, dtype=torch.float32)
            if thresholded and mode is EncodeMode.THRESHOLD and weights.threshold is not None
            else None
        )
        # ReLU(pre) * (pre > t) is pre where pre > max(t, 0) and 0 elsewhere: one in-place pass over the
        # [tokens, d_sae] pre-activations instead of three (they are 0.5 GB per 1,024 tokens at d_sae = 131,072).
        self._cut = None if threshold is None else threshold.clamp(min=0.0)

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    @property
    def architecture(self) -> Architecture:
        return self.config.architecture

    @property
    def block(self) -> int | None:
        return self.config.block

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=torch.float32)
        return x - self.b_dec if self.config.apply_b_dec_to_input else x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d_in] -> [N, d_sae]"""
        return torch.addmm(self.b_enc, self._input(x), self.W_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d_in] -> [N, d_sae] latent activations"""
        pre = self.pre_acts(x)
        if self.architecture is Architecture.TOPK:
            assert self.config.k is not None
            top = pre.topk(min(self.config.k, self.d_sae), dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        if self._cut is not None:
            return pre.masked_fill_(pre <= self._cut, 0.0)
        return pre.relu_()

    def encode_latents(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """[N, d_in] -> [N, L]: activations of the given latents only. Without TopK each latent is independent
        of the others, so only their columns of W_enc are multiplied (a small slice of a 131k-wide SAE)."""
        if self.architecture is Architecture.TOPK:
            return self.encode(x)[:, latents]
        pre = torch.addmm(self.b_enc[latents], self._input(x), self.W_enc[:, latents])
        if self._cut is not None:
            cut = self._cut if self._cut.ndim == 0 else self._cut[latents]
            return pre.masked_fill_(pre <= cut, 0.0)
        return pre.relu_()

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """[N, d_sae] -> [N, d_in]"""
        return acts.to(dtype=torch.float32) @ self.W_dec + self.b_dec
