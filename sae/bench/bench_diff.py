"""Throughput of the diff job on a model of Qwen2.5-7B-Instruct's shape, against the reference way of doing it.

    python sae/bench/bench_diff.py                       # CUDA: random Qwen2.5-7B-shaped model, 131,072-wide SAE
    python sae/bench/bench_diff.py --device cpu --tiny   # smoke run with tiny shapes (what the test runs)

Builds a randomly initialised Qwen2 with Qwen2.5-7B-Instruct's shape (hidden 3584, intermediate 18944, 28 heads,
4 KV heads, vocab 152064) but only the 16 blocks a block-15 SAE needs, in bf16; a random 131,072-wide BatchTopK
SAE on block 15 whose threshold is set so that about 64 latents fire per token; and synthetic rows whose
templated target and base sequences are 300-600 tokens. Then it times

  ours:  the diff job code (inoculant_sae.jobs.diff.run_diff): length-bucketed batches under a token budget,
         forward stopped at block 15, SAE encode of the pooled tokens only, sparse pooled vectors, shard cache,
         and the final summaries;
  naive: the reference way: one sequence at a time, a full forward (every built block, final norm and LM head)
         with output_hidden_states, dense SAE output on every token, mean, dense vector to the CPU.

and prints tokens/s of both, their ratio, the share of the H100's dense bf16 peak (989 TFLOP/s) that ours
reaches (FLOPs per token computed from the shapes: blocks 0-15 plus the SAE encode), and peak GPU memory.
Tokens are real (non-padding) tokens of the target and base sequences. Note that the reference model has 28
blocks, so the real reference costs more per token than this naive baseline on 16 blocks.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inoculant_sae.backends.base import (
    ChatMessage,
    ModelBackend,
    TokenBatch,
    TokenizedSequence,
    make_batch,
    with_default_system,
)
from inoculant_sae.backends.hf import run_to_block
from inoculant_sae.device import prepare
from inoculant_sae.jobs.diff import DiffRow, run_diff
from inoculant_sae.jobs.output import CollectedOutput
from inoculant_sae.params import DiffParams, ModelSpec, PythonModelSpec, SAESpec
from inoculant_sae.pooling import PoolingOptions
from inoculant_sae.sae.model import SAE
from inoculant_sae.sae.types import Architecture, EncodeMode, SAEConfig, SAEWeights

H100_BF16_DENSE_FLOPS = 989e12


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int  # blocks built (block = layers - 1 is hooked)
    heads: int
    kv_heads: int
    vocab: int
    d_sae: int
    seq_min: int
    seq_max: int


QWEN25_7B = Shape(
    hidden=3584,
    intermediate=18944,
    layers=16,
    heads=28,
    kv_heads=4,
    vocab=152064,
    d_sae=131072,
    seq_min=300,
    seq_max=600,
)
TINY = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=1000, d_sae=256, seq_min=30, seq_max=60)
ACTIVE_PER_TOKEN = 64


def flops_per_token(shape: Shape, context: float) -> dict[str, float]:
    """Forward FLOPs per token (2 per multiply-add). `context`: mean number of keys a query attends to."""
    head_dim = shape.hidden // shape.heads
    kv = shape.kv_heads * head_dim
    projections = 2 * (2 * shape.hidden * shape.hidden + 2 * shape.hidden * kv)  # q, o and k, v
    mlp = 2 * 3 * shape.hidden * shape.intermediate  # gate, up, down
    attention = 2 * 2 * context * shape.hidden  # q.k and attention-weighted v
    blocks = shape.layers * (projections + mlp + attention)
    sae = 2 * shape.hidden * shape.d_sae
    return {"blocks": blocks, "sae": sae, "total": blocks + sae}


class SyntheticBackend(ModelBackend):
    """The random Qwen2 behind the diff job's backend interface. Message contents are token ids written as
    space-separated integers, so no tokenizer is needed; the template is ChatML-like with special ids at the top
    of the vocabulary."""

    def __init__(self, model: Any, shape: Shape) -> None:
        self._model = model
        self._shape = shape
        self._blocks = model.model.layers
        self.im_start, self.im_end, self.pad = shape.vocab - 3, shape.vocab - 2, shape.vocab - 1
        self._roles = {"system": 10, "user": 11, "assistant": 12}

    @property
    def hidden_size(self) -> int:
        return self._shape.hidden

    @property
    def num_blocks(self) -> int:
        return self._shape.layers

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self._model.parameters()).device
        return device

    @property
    def pad_id(self) -> int:
        return self.pad

    def tokenize_chat(self, messages: Sequence[ChatMessage], system_prompt: str | None) -> TokenizedSequence:
        full = with_default_system(messages, system_prompt)
        ids: list[int] = []
        response: list[bool] = []
        for n, message in enumerate(full):
            content = [int(t) for t in message["content"].split()]
            last = n == len(full) - 1 and message["role"] == "assistant"
            ids += [self.im_start, self._roles[message["role"]], *content, self.im_end]
            response += [False, False, *([last] * len(content)), False]
        special = tuple(i in (self.im_start, self.im_end) for i in ids)
        return TokenizedSequence(tuple(ids), tuple(response), special)

    def tokenize_text(self, text: str) -> TokenizedSequence:
        ids = tuple(int(t) for t in text.split())
        return TokenizedSequence(ids, (False,) * len(ids), (False,) * len(ids))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [str(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(i) for i in ids)

    def residual(self, batch: TokenBatch, block: int) -> torch.Tensor:
        return run_to_block(self._model.model, self._blocks, batch, block)


class PrebuiltResources:
    """Hands the diff job the objects built here instead of loading them from files."""

    def __init__(self, backend: SyntheticBackend, sae: SAE) -> None:
        self._backend = backend
        self._sae = sae

    def model_identity(self, spec: ModelSpec) -> dict[str, Any]:
        return {"bench": "random qwen2"}

    def sae_identity(self, spec: SAESpec) -> dict[str, Any]:
        return {"bench": "random sae"}

    def sae_config(self, spec: SAESpec) -> SAEConfig:
        return self._sae.config

    def backend(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype | None, block: int) -> ModelBackend:
        return self._backend

    def sae(self, spec: SAESpec, config: SAEConfig, device: torch.device) -> SAE:
        return self._sae


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        # Built directly on the device in the target dtype: 4.8B parameters initialised on the CPU in fp32 would
        # take minutes and 19 GB.
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def build_sae(shape: Shape, block: int, device: torch.device, sample: torch.Tensor) -> SAE:
    """Random encoder; the global threshold is the pre-activation quantile that leaves ACTIVE_PER_TOKEN latents
    per token on `sample` (residuals of the model), like a trained BatchTopK SAE with k=64."""
    generator = torch.Generator(device=device).manual_seed(0)
    W_enc = torch.randn(shape.hidden, shape.d_sae, device=device, generator=generator) / math.sqrt(shape.hidden)
    b_dec = sample.float().mean(dim=0)
    pre = (sample.float() - b_dec) @ W_enc
    values = pre.flatten()[: 2**24 - 1]  # torch.quantile's input limit
    threshold = torch.quantile(values, 1.0 - min(ACTIVE_PER_TOKEN, shape.d_sae // 4) / shape.d_sae)
    weights = SAEWeights(
        W_enc=W_enc, b_enc=torch.zeros(shape.d_sae, device=device), W_dec=W_enc.T, b_dec=b_dec, threshold=threshold
    )
    config = SAEConfig(
        format="dictionary_learning",
        path=Path("random"),
        weights_file=Path("random/ae.pt"),
        d_in=shape.hidden,
        d_sae=shape.d_sae,
        architecture=Architecture.BATCHTOPK,
        k=None,
        block=block,
        model_name="random Qwen2.5-7B-Instruct shape",
        apply_b_dec_to_input=True,
    )
    return SAE(config, weights, EncodeMode.THRESHOLD, device)


def synthetic_rows(shape: Shape, n: int, seed: int) -> list[DiffRow]:
    """Rows whose templated target and base sequences (system + user + assistant) are seq_min..seq_max tokens."""
    g = torch.Generator().manual_seed(seed)

    def ids(count: int) -> str:
        return " ".join(str(int(t)) for t in torch.randint(100, shape.vocab - 3, (count,), generator=g))

    overhead = 3 * 3 + 8  # three messages' markup and the system prompt
    rows = []
    for i in range(n):
        prompt_len = int(torch.randint(shape.seq_min // 5, shape.seq_min // 3, (1,), generator=g))
        lo, hi = shape.seq_min - prompt_len - overhead, shape.seq_max - prompt_len - overhead
        target_len, base_len = (int(x) for x in torch.randint(lo, hi + 1, (2,), generator=g))
        prompt: list[ChatMessage] = [{"role": "user", "content": ids(prompt_len)}]
        rows.append(DiffRow(f"row{i}", prompt, ids(target_len), ids(base_len), json.dumps(prompt)))
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_tokens_per_second(
    model: Any, sae: SAE, backend: SyntheticBackend, rows: Sequence[DiffRow], system: str, block: int
) -> float:
    """The reference way: per sequence, full forward with every hidden state, dense SAE acts, mean, to CPU."""
    device = backend.device
    tokens = 0
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for row in rows:
            for response in (row.target, row.base):
                seq = backend.tokenize_chat([*row.prompt, {"role": "assistant", "content": response}], system)
                ids = torch.tensor([seq.input_ids], device=device)
                hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[block + 1][0]
                acts = torch.relu((hidden.float() - sae.b_dec) @ sae.W_enc + sae.b_enc)
                acts.mean(dim=0).cpu()
                tokens += len(seq)
    sync(device)
    return tokens / (time.perf_counter() - start)


def run_ours(
    params: DiffParams, rows: Sequence[DiffRow], resources: PrebuiltResources, device: torch.device
) -> tuple[dict[str, Any], float]:
    sync(device)
    start = time.perf_counter()
    summary = run_diff(params, rows, resources, CollectedOutput())
    sync(device)
    return summary, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--rows", type=int, default=None, help="rows for our run (default 512; tiny 12)")
    parser.add_argument("--naive-rows", type=int, default=None, help="rows for the naive run (default 32; tiny 4)")
    parser.add_argument("--token-budget", type=int, default=None, help="tokens per batch (default 16384; tiny 256)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    shape = TINY if args.tiny else QWEN25_7B
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n_rows = args.rows or (12 if args.tiny else 512)
    n_naive = args.naive_rows or (4 if args.tiny else 32)
    budget = args.token_budget or (256 if args.tiny else 16384)
    block = shape.layers - 1
    system = "1 2 3 4 5 6 7 8"
    prepare(device)

    build_start = time.perf_counter()
    model = build_model(shape, device, dtype)
    backend = SyntheticBackend(model, shape)
    rows = synthetic_rows(shape, n_rows, seed=0)
    warm = synthetic_rows(shape, 4, seed=1)
    sample_seq = backend.tokenize_chat([*warm[0].prompt, {"role": "assistant", "content": warm[0].target}], system)
    # Residuals to calibrate the SAE threshold on, without the first (attention-sink) token.
    sample = backend.residual(make_batch([sample_seq], backend.pad_id, device), block)[0, 1:]
    sae = build_sae(shape, block, device, sample)
    resources = PrebuiltResources(backend, sae)
    build_seconds = time.perf_counter() - build_start

    with tempfile.TemporaryDirectory() as tmp:

        def params(cache: str) -> DiffParams:
            return DiffParams(
                model=PythonModelSpec(Path(__file__), {}),
                device=str(device),
                sae=SAESpec("dictionary_learning", Path(tmp), EncodeMode.THRESHOLD),
                block=block,
                system_prompt=system,
                pooling=PoolingOptions(),
                token_budget=budget,
                top_n=200,
                row_top_k=20,
                cache_dir=Path(tmp) / cache,
                shard_rows=256,
            )

        run_ours(params("warmup"), warm, resources, device)  # kernels, allocator
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        summary, seconds = run_ours(params("run"), rows, resources, device)
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    naive_rows = rows[:n_naive]
    naive_tokens_per_second(model, sae, backend, naive_rows[:1], system, block)  # warm-up
    naive_tps = naive_tokens_per_second(model, sae, backend, naive_rows, system, block)

    real_tokens = summary["tokens"]["forward"]
    mean_len = real_tokens / (2 * n_rows)
    flops = flops_per_token(shape, context=(mean_len + 1) / 2)
    ours_tps = real_tokens / seconds
    forward_tps = summary["forward_tokens_per_second"]
    report = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "shape": shape.__dict__,
        "dtype": str(dtype).removeprefix("torch."),
        "rows": n_rows,
        "mean_sequence_tokens": mean_len,
        "token_budget": budget,
        "padding_share": 1 - real_tokens / summary["tokens"]["padded"],
        "gflop_per_token": {k: v / 1e9 for k, v in flops.items()},
        "ours_tokens_per_second": ours_tps,
        "ours_forward_and_encode_tokens_per_second": forward_tps,
        "ours_seconds": seconds,
        "naive_rows": n_naive,
        "naive_tokens_per_second": naive_tps,
        "speedup": ours_tps / naive_tps,
        "roofline_share": ours_tps * flops["total"] / H100_BF16_DENSE_FLOPS,
        "peak_gpu_memory_gib": peak_gib,
        "build_seconds": build_seconds,
    }
    lines = [
        f"device               {report['device']}, {report['dtype']}",
        f"shape                hidden {shape.hidden}, {shape.layers} blocks, SAE {shape.d_sae} on block {block}",
        f"rows                 {n_rows} (sequences of {mean_len:.0f} tokens on average), "
        f"token budget {budget}, padding {report['padding_share']:.1%}",
        f"FLOPs per token      {flops['total'] / 1e9:.2f} GFLOP "
        f"(blocks {flops['blocks'] / 1e9:.2f}, SAE {flops['sae'] / 1e9:.2f})",
        f"ours                 {ours_tps:,.0f} tokens/s end to end ({forward_tps:,.0f} tokens/s forward + encode)",
        f"naive (reference)    {naive_tps:,.0f} tokens/s on {n_naive} rows",
        f"ratio                {report['speedup']:.1f}x",
        f"H100 bf16 roofline   {report['roofline_share']:.1%} of 989 TFLOP/s",
        f"peak GPU memory      {'n/a (CPU)' if peak_gib is None else f'{peak_gib:.1f} GiB'}",
    ]
    print("\n".join(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
