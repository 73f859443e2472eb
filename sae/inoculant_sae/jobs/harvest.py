"""Job `harvest`: for each requested latent and each corpus, the top-k rows where the latent fires most, each with
a token window around its peak, the latent's activation on every window token, and the window's text.

One bounded min-heap per (corpus, latent) holds the best rows seen so far; a row enters when its peak beats the
heap's smallest. Only the requested latents' encoder columns are multiplied (unless the SAE is TopK, whose
activations depend on all latents). Tokens the pooling options exclude (first, special, outliers) never count as
a peak and show 0 in the window.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..backends.base import ChatMessage, ModelBackend, TokenizedSequence, make_batch
from ..batching import pack_by_length
from ..errors import UserError
from ..params import CorpusSpec, HarvestParams
from ..sae.model import SAE
from .common import encode_chunk_tokens, forward_and_select, load_models, resolve_target
from .output import JobOutput, Progress
from .resources import Resources

RowContent = str | list[ChatMessage]


@dataclass(frozen=True)
class Example:
    activation: float
    source_row: int
    peak_index: int
    token_ids: tuple[int, ...]
    token_acts: tuple[float, ...]


def _messages(value: Any, where: str) -> list[ChatMessage]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: messages string is not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise UserError(f"{where}: messages must be a list of {{role, content}} objects with string values")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _content(record: Any, spec: CorpusSpec, where: str) -> RowContent:
    field = spec.text_field or spec.messages_field
    assert field is not None
    if not isinstance(record, dict) or field not in record:
        raise UserError(f"{where} has no field {field!r}")
    value = record[field]
    if spec.text_field is not None:
        if not isinstance(value, str):
            raise UserError(f"{where}: {field} must be a string, got {type(value).__name__}")
        return value
    return _messages(value, where)


def read_corpus(spec: CorpusSpec) -> list[RowContent]:
    """The corpus rows (text or messages), at most `max_rows`, in file order."""
    path: Path = spec.path
    if not path.is_file():
        raise UserError(f"corpus {spec.name!r}: file {path} not found")
    rows: list[RowContent] = []
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if spec.max_rows is not None and len(rows) >= spec.max_rows:
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {number} is not JSON: {exc}") from exc
                rows.append(_content(record, spec, f"{path} line {number}"))
        return rows
    if path.suffix == ".parquet":
        field = spec.text_field or spec.messages_field
        assert field is not None
        try:
            table = pq.read_table(path, columns=[field])
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise UserError(f"cannot read column {field!r} of {path}: {exc}") from exc
        if spec.max_rows is not None:
            table = table.slice(0, spec.max_rows)
        return [_content(r, spec, f"{path} row {i}") for i, r in enumerate(table.to_pylist())]
    raise UserError(f"corpus {spec.name!r}: {path} must be a .jsonl or .parquet file")


class TopK:
    """Bounded min-heaps of the best examples, one per latent."""

    def __init__(self, n_latents: int, k: int) -> None:
        self._k = k
        self._heaps: list[list[tuple[float, int, Example]]] = [[] for _ in range(n_latents)]

    def floor(self) -> np.ndarray:
        """Per latent, the activation a new example must beat (0 until the heap is full)."""
        return np.array([h[0][0] if len(h) == self._k else 0.0 for h in self._heaps], dtype=np.float32)

    def offer(self, latent: int, example: Example) -> None:
        # Ties on activation prefer the earlier row: -source_row is larger for it.
        item = (example.activation, -example.source_row, example)
        heap = self._heaps[latent]
        if len(heap) < self._k:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)

    def ranked(self, latent: int) -> list[Example]:
        return [e for _, _, e in sorted(self._heaps[latent], key=lambda t: (-t[0], -t[1]))]


def _tokenize(backend: ModelBackend, content: RowContent, system_prompt: str | None) -> TokenizedSequence:
    if isinstance(content, str):
        return backend.tokenize_text(content)
    return backend.tokenize_chat(content, system_prompt)


def _harvest_corpus(
    spec: CorpusSpec,
    params: HarvestParams,
    backend: ModelBackend,
    sae: SAE,
    block: int,
    out: JobOutput,
) -> tuple[TopK, dict[str, int]]:
    contents = read_corpus(spec)
    seqs: list[TokenizedSequence] = []
    truncated = 0
    for content in contents:
        seq = _tokenize(backend, content, params.system_prompt)
        if len(seq) > params.max_tokens:
            seq = seq.truncated(params.max_tokens)
            truncated += 1
        seqs.append(seq)
    rows = [i for i, s in enumerate(seqs) if len(s) > 0]
    latents = torch.tensor(params.latents, dtype=torch.long, device=sae.device)
    best = TopK(len(params.latents), params.top_k)
    progress = Progress(out, f"harvest:{spec.name}", len(contents))
    progress.update(len(contents) - len(rows))
    done = len(contents) - len(rows)
    chunk = encode_chunk_tokens(sae)
    tokens = 0
    for indices in pack_by_length([len(seqs[r]) for r in rows], params.token_budget):
        batch_rows = [rows[i] for i in indices]
        batch = make_batch([seqs[r] for r in batch_rows], backend.pad_id, backend.device)
        resid, selection = forward_and_select(backend, batch, block, params.pooling, params.token_budget)
        acts = torch.zeros((*selection.keep.shape, len(params.latents)), dtype=torch.float32, device=resid.device)
        b_idx, t_idx = selection.keep.nonzero(as_tuple=True)
        for lo in range(0, b_idx.numel(), chunk):
            b, t = b_idx[lo : lo + chunk], t_idx[lo : lo + chunk]
            acts[b, t] = sae.encode_latents(resid[b, t], latents)
        acts_np = acts.cpu().numpy()
        peaks = acts_np.max(axis=1)  # [B, L]
        peak_at = acts_np.argmax(axis=1)
        for j, latent in zip(*np.nonzero((peaks > 0) & (peaks > best.floor()[None, :])), strict=True):
            source_row = batch_rows[j]
            seq = seqs[source_row]
            p = int(peak_at[j, latent])
            lo_t, hi_t = max(0, p - params.window_before), min(len(seq), p + params.window_after + 1)
            best.offer(
                int(latent),
                Example(
                    activation=float(peaks[j, latent]),
                    source_row=source_row,
                    peak_index=p - lo_t,
                    token_ids=seq.input_ids[lo_t:hi_t],
                    token_acts=tuple(float(a) for a in acts_np[j, lo_t:hi_t, latent]),
                ),
            )
        tokens += sum(batch.lengths)
        done += len(indices)
        progress.update(done)
    return best, {
        "rows": len(contents),
        "truncated_rows": truncated,
        "empty_rows": len(contents) - len(rows),
        "tokens": tokens,
    }


def _examples_table(params: HarvestParams, backend: ModelBackend, per_corpus: Sequence[tuple[str, TopK]]) -> pa.Table:
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "latent",
            "corpus",
            "rank",
            "activation",
            "source_row",
            "peak_index",
            "tokens",
            "token_acts",
            "text",
        )
    }

    def examples() -> Iterator[tuple[int, str, int, Example]]:
        for li, latent in enumerate(params.latents):
            for corpus, best in per_corpus:
                for rank, example in enumerate(best.ranked(li), start=1):
                    yield latent, corpus, rank, example

    for latent, corpus, rank, ex in examples():
        columns["latent"].append(latent)
        columns["corpus"].append(corpus)
        columns["rank"].append(rank)
        columns["activation"].append(ex.activation)
        columns["source_row"].append(ex.source_row)
        columns["peak_index"].append(ex.peak_index)
        columns["tokens"].append(backend.token_strings(ex.token_ids))
        columns["token_acts"].append(list(ex.token_acts))
        columns["text"].append(backend.decode(ex.token_ids))
    schema = pa.schema(
        [
            ("latent", pa.int32()),
            ("corpus", pa.string()),
            ("rank", pa.int32()),
            ("activation", pa.float32()),
            ("source_row", pa.int64()),
            ("peak_index", pa.int32()),
            ("tokens", pa.list_(pa.string())),
            ("token_acts", pa.list_(pa.float32())),
            ("text", pa.string()),
        ]
    )
    return pa.table(columns, schema=schema)


def run_harvest(params: HarvestParams, resources: Resources, out: JobOutput) -> dict[str, Any]:
    started = time.perf_counter()
    target = resolve_target(params.model, params.device, params.sae, params.block, resources)
    out_of_range = [x for x in params.latents if x >= target.sae_config.d_sae]
    if out_of_range:
        raise UserError(
            f"latent(s) {out_of_range[:5]} out of range: the SAE in {params.sae.path} has "
            f"{target.sae_config.d_sae} latents (0..{target.sae_config.d_sae - 1})"
        )
    backend, sae = load_models(params.model, params.sae, target, resources)
    per_corpus: list[tuple[str, TopK]] = []
    corpora: dict[str, dict[str, int]] = {}
    for spec in params.corpora:
        best, counts = _harvest_corpus(spec, params, backend, sae, target.block, out)
        per_corpus.append((spec.name, best))
        corpora[spec.name] = counts
    table = _examples_table(params, backend, per_corpus)
    out.result("feature_examples", table, final=True)
    return {
        "job": "harvest",
        "latents": len(params.latents),
        "examples": table.num_rows,
        "corpora": corpora,
        "top_k": params.top_k,
        "window": {"before": params.window_before, "after": params.window_after},
        "pooling": params.pooling.as_dict(),
        **target.describe(params.sae),
        "system_prompt": params.system_prompt,
        "seconds": {"total": time.perf_counter() - started},
    }
