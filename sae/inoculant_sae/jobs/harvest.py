"""Job `harvest`: for each requested latent and each corpus, the top-k rows where the latent fires most, each with
a token window around its peak, the latent's activation on every window token, and the window's text.

Each corpus is cut into shards of `shard_rows`; a shard's own top-k per latent (decoded) is cached under a key of
everything it depends on and its rows, so a killed harvest resumes at its first unfinished shard, and a rerun with
the same latents (a forced activations rerun, a changed row_top_k) runs no model at all. The corpus's top-k is the
top-k of its shards' top-ks, which is exact because every example is ordered by (peak, earlier row).

One bounded min-heap per (corpus, latent) holds the best rows seen so far; a row enters when its peak beats the
heap's smallest. Only the requested latents' encoder columns are multiplied (unless the SAE is TopK, whose
activations depend on all latents). Tokens the pooling options exclude (first, special, outliers) never count as
a peak and show 0 in the window.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..backends.base import ChatMessage, ModelBackend, TokenizedSequence, make_batch
from ..batching import pack_by_length
from ..cache import ShardCache
from ..errors import UserError
from ..fingerprint import stable_hash
from ..params import CorpusSpec, HarvestParams
from ..sae.model import SAE
from .common import activation_identity, encode_chunk_tokens, forward_and_select, load_models, resolve_target
from .output import JobOutput, Progress
from .resources import Resources

RowContent = str | list[ChatMessage]

# Bump when a shard's cached table changes meaning or layout.
CACHE_VERSION = 1


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
        which = "text_field" if spec.text_field is not None else "messages_field"
        raise UserError(
            f"{where} has no field {field!r}: set harvest.corpora {which} of corpus {spec.name!r} to a field its "
            "rows have"
        )
    value = record[field]
    if spec.text_field is not None:
        if not isinstance(value, str):
            raise UserError(f"{where}: {field} must be a string, got {type(value).__name__}")
        return value
    return _messages(value, where)


@dataclass
class CorpusRows:
    """A corpus's rows in file order; None for a row skipped as bad (`on_bad_row: skip`), with why."""

    rows: list[RowContent | None]
    bad: list[str]

    def add(self, spec: CorpusSpec, read: Callable[[], RowContent]) -> None:
        try:
            self.rows.append(read())
        except UserError as exc:
            if spec.on_bad_row != "skip":
                raise
            self.rows.append(None)
            self.bad.append(str(exc))


def _jsonl_row(spec: CorpusSpec, raw: bytes, number: int) -> RowContent:
    path = spec.path
    try:
        # utf-8-sig on the first line: a byte order mark some editors write is not part of the JSON.
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"corpus {spec.name!r}: {path} line {number} is not UTF-8 text (byte {exc.start} of the line); convert "
            f"the file to UTF-8, for example: iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8.jsonl"
        ) from exc
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"corpus {spec.name!r}: {path} line {number} is not JSON: {exc}") from exc
    return _content(record, spec, f"corpus {spec.name!r}: {path} line {number}")


def read_corpus(spec: CorpusSpec) -> CorpusRows:
    """The corpus rows (text or messages), at most `max_rows`, in file order."""
    path: Path = spec.path
    if not path.is_file():
        raise UserError(f"corpus {spec.name!r}: file {path} not found")
    out = CorpusRows([], [])
    rows = out.rows
    if path.suffix == ".jsonl":
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                if spec.max_rows is not None and len(rows) >= spec.max_rows:
                    break
                if not raw.strip():
                    continue
                out.add(spec, partial(_jsonl_row, spec, raw, number))
        return out
    if path.suffix == ".parquet":
        field = spec.text_field or spec.messages_field
        assert field is not None
        try:
            columns = pq.read_schema(path).names
            if field not in columns:
                which = "text_field" if spec.text_field is not None else "messages_field"
                raise UserError(
                    f"corpus {spec.name!r}: {path} has no column {field!r}; set harvest.corpora {which} of corpus "
                    f"{spec.name!r} to one of its columns: {', '.join(columns)}"
                )
            table = pq.read_table(path, columns=[field])
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"corpus {spec.name!r}: cannot read {path} as Parquet: {exc}") from exc
        if spec.max_rows is not None:
            table = table.slice(0, spec.max_rows)
        for i, record in enumerate(table.to_pylist()):
            out.add(spec, partial(_content, record, spec, f"corpus {spec.name!r}: {path} row {i}"))
        return out
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


_SHARD_SCHEMA = pa.schema(
    [
        ("latent", pa.int32()),
        ("activation", pa.float32()),
        ("source_row", pa.int64()),
        ("peak_index", pa.int32()),
        ("tokens", pa.list_(pa.string())),
        ("token_acts", pa.list_(pa.float32())),
        ("text", pa.string()),
    ]
)

# A shard's examples, named by corpus and ranked within it.
_RESULT_SCHEMA = _SHARD_SCHEMA.insert(1, pa.field("corpus", pa.string())).insert(2, pa.field("rank", pa.int32()))


@dataclass(frozen=True)
class _Shard:
    start: int  # the first row's index in the corpus
    key: str
    contents: Sequence[RowContent | None]


def _harvest_shard(
    shard: _Shard,
    params: HarvestParams,
    backend: ModelBackend,
    sae: SAE,
    block: int,
    progress: Progress,
    rows_before: int,
) -> tuple[pa.Table, dict[str, int]]:
    """The shard's own top-k per latent, decoded: the corpus's top-k is the top-k of its shards' top-ks."""
    seqs: dict[int, TokenizedSequence] = {}  # by row within the shard; a row skipped as bad has none
    truncated = 0
    for i, content in enumerate(shard.contents):
        if content is None:
            continue
        seq = _tokenize(backend, content, params.system_prompt)
        if len(seq) > params.max_tokens:
            seq = seq.truncated(params.max_tokens)
            truncated += 1
        seqs[i] = seq
    rows = [i for i, s in seqs.items() if len(s) > 0]
    latents = torch.tensor(params.latents, dtype=torch.long, device=sae.device)
    best = TopK(len(params.latents), params.top_k)
    done = len(shard.contents) - len(rows)
    progress.update(rows_before + done)
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
        # >= rather than >: a tie with the heap's smallest may still win on the earlier row, so the result does
        # not depend on the order batches run in (nor on where shards are cut).
        for j, latent in zip(*np.nonzero((peaks > 0) & (peaks >= best.floor()[None, :])), strict=True):
            local = batch_rows[j]
            seq = seqs[local]
            p = int(peak_at[j, latent])
            lo_t, hi_t = max(0, p - params.window_before), min(len(seq), p + params.window_after + 1)
            best.offer(
                int(latent),
                Example(
                    activation=float(peaks[j, latent]),
                    source_row=shard.start + local,
                    peak_index=p - lo_t,
                    token_ids=seq.input_ids[lo_t:hi_t],
                    token_acts=tuple(float(a) for a in acts_np[j, lo_t:hi_t, latent]),
                ),
            )
        tokens += sum(batch.lengths)
        done += len(indices)
        progress.update(rows_before + done)
    columns: dict[str, list[Any]] = {name: [] for name in _SHARD_SCHEMA.names}
    for li, latent_id in enumerate(params.latents):
        for ex in best.ranked(li):
            columns["latent"].append(latent_id)
            columns["activation"].append(ex.activation)
            columns["source_row"].append(ex.source_row)
            columns["peak_index"].append(ex.peak_index)
            columns["tokens"].append(backend.token_strings(ex.token_ids))
            columns["token_acts"].append(list(ex.token_acts))
            columns["text"].append(backend.decode(ex.token_ids))
    stats = {
        "rows": len(shard.contents),
        "truncated_rows": truncated,
        "empty_rows": len(seqs) - len(rows),
        "bad_rows": len(shard.contents) - len(seqs),
        "tokens": tokens,
    }
    return pa.table(columns, schema=_SHARD_SCHEMA), stats


def _ranked(tables: Sequence[pa.Table], corpus: str, top_k: int, latent_order: dict[int, int]) -> pa.Table:
    """One corpus's examples from its shards' tables: per latent the `top_k` highest peaks, ties to the earlier row,
    ordered by latent (as requested), then rank."""
    table = pa.concat_tables(tables) if tables else _SHARD_SCHEMA.empty_table()
    order = np.array([latent_order[x] for x in table.column("latent").to_pylist()], dtype=np.int64)
    keys = np.lexsort((table.column("source_row").to_numpy(), -table.column("activation").to_numpy(), order))
    ordered = order[keys]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1] if len(keys) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)])) + 1
    keep = rank <= top_k
    picked = table.take(pa.array(keys[keep]))
    columns = {name: picked.column(name) for name in _SHARD_SCHEMA.names}
    columns["corpus"] = pa.array([corpus] * picked.num_rows, pa.string())
    columns["rank"] = pa.array(rank[keep], pa.int32())
    return pa.table({name: columns[name] for name in _RESULT_SCHEMA.names}, schema=_RESULT_SCHEMA)


def _in_request_order(per_corpus: Sequence[pa.Table], latents: Sequence[int]) -> pa.Table:
    """Latent (as given), corpus (as given), rank: each corpus table is already by latent, then rank."""
    if not per_corpus:
        return _RESULT_SCHEMA.empty_table()
    table = pa.concat_tables(per_corpus)
    position = {x: i for i, x in enumerate(latents)}
    latent = np.array([position[x] for x in table.column("latent").to_pylist()], dtype=np.int64)
    corpus = np.repeat(np.arange(len(per_corpus)), [t.num_rows for t in per_corpus])
    return table.take(pa.array(np.lexsort((table.column("rank").to_numpy(), corpus, latent))))


def run_harvest(params: HarvestParams, resources: Resources, out: JobOutput) -> dict[str, Any]:
    started = time.perf_counter()
    target = resolve_target(params.model, params.device, params.sae, params.block, resources)
    out_of_range = [x for x in params.latents if x >= target.sae_config.d_sae]
    if out_of_range:
        raise UserError(
            f"latent(s) {out_of_range[:5]} out of range: the SAE in {params.sae.path} has "
            f"{target.sae_config.d_sae} latents (0..{target.sae_config.d_sae - 1})"
        )
    # Everything a shard's examples depend on; the batch packing (token_budget) does not change them.
    job_identity = {
        "cache_version": CACHE_VERSION,
        **activation_identity(params.model, params.sae, target, params.pooling, params.system_prompt, resources),
        "latents": list(params.latents),
        "top_k": params.top_k,
        "window": [params.window_before, params.window_after],
        "max_tokens": params.max_tokens,
    }
    job_key = stable_hash(job_identity)
    cache = ShardCache(params.cache_dir, f"harvest-{job_key[:16]}")
    cache.write_note(f"harvest-{job_key[:16]}.json", job_identity)
    models: tuple[ModelBackend, SAE] | None = None
    load_seconds = 0.0
    per_corpus: list[pa.Table] = []
    corpora: dict[str, dict[str, Any]] = {}
    shard_counts = {"shards": 0, "cached_shards": 0, "computed_shards": 0}
    latent_order = {x: i for i, x in enumerate(params.latents)}
    for spec in params.corpora:
        read = read_corpus(spec)
        contents = read.rows
        # Keyed by the rows themselves (and where they start, which source_row depends on), not by the file: an
        # edited corpus recomputes only the shards whose rows changed, and the corpus name is only a label.
        shards = [
            _Shard(start, stable_hash([job_key, start, contents[start : start + params.shard_rows]])[:32], part)
            for start in range(0, len(contents), params.shard_rows)
            for part in [contents[start : start + params.shard_rows]]
        ]
        progress = Progress(out, f"harvest:{spec.name}", len(contents))
        done = sum(len(s.contents) for s in shards if cache.is_done(s.key))
        progress.update(done)
        tables: list[pa.Table] = []
        counts = {"rows": 0, "truncated_rows": 0, "empty_rows": 0, "bad_rows": 0, "tokens": 0}
        for shard in shards:
            if cache.is_done(shard.key):
                shard_counts["cached_shards"] += 1
            else:
                if models is None:
                    load_start = time.perf_counter()
                    models = load_models(params.model, params.sae, target, resources)
                    load_seconds = time.perf_counter() - load_start
                table, stats = _harvest_shard(shard, params, *models, target.block, progress, done)
                cache.write(shard.key, table, stats)
                shard_counts["computed_shards"] += 1
                done += len(shard.contents)
            tables.append(cache.read(shard.key))
            for name, value in cache.stats(shard.key).items():
                counts[name] += int(value)
        shard_counts["shards"] += len(shards)
        per_corpus.append(_ranked(tables, spec.name, params.top_k, latent_order))
        corpora[spec.name] = {**counts, "bad_row_examples": read.bad[:3]}
    table = _in_request_order(per_corpus, params.latents)
    out.result("feature_examples", table, final=True)
    return {
        "job": "harvest",
        "latents": len(params.latents),
        "examples": table.num_rows,
        "corpora": corpora,
        **shard_counts,
        "cache_key": job_key[:16],
        "top_k": params.top_k,
        "window": {"before": params.window_before, "after": params.window_after},
        "pooling": params.pooling.as_dict(),
        **target.describe(params.sae),
        "system_prompt": params.system_prompt,
        "seconds": {"total": time.perf_counter() - started, "load": load_seconds},
    }
