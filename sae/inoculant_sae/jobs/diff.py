"""Job `diff`: per row, the SAE latents mean-pooled over the target response's sequence and over the base
response's sequence; then the latents whose mean rises most from base to target (`features`), every row's values
on them (`example_features`), each row's own largest rises (`row_top`) and token counts (`tokens`).

Rows are cut into shards of `shard_rows`. Each shard's pooled vectors are kept sparse (latent ids + values) in
the cache, keyed by everything they depend on (model, SAE and encode mode, block, pooling, system prompt) and by
the shard's rows, so a killed job resumes at the first unfinished shard and a rerun with another `top_n` runs no
model at all (nor loads one). Within a shard, the target and base sequences are sorted by length and packed
under `token_budget`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..backends.base import ChatMessage, ModelBackend, TokenizedSequence, make_batch
from ..batching import pack_by_length
from ..cache import ShardCache
from ..errors import UserError
from ..fingerprint import stable_hash
from ..params import DiffParams
from ..pooling import DROP_REASONS, mean_pool, truncate_pair
from ..sae.model import SAE
from .common import (
    Target,
    activation_identity,
    encode_chunk_tokens,
    forward_and_select,
    load_models,
    resolve_target,
)
from .output import JobOutput, Progress
from .resources import Resources

CACHE_VERSION = 1
_INPUT_COLUMNS = ("row_id", "prompt", "target", "base")
# Rows per chunk when densifying pooled vectors for each row's top latents ([rows, d_sae] float32 at a time).
_DENSE_ROWS = 64

CACHE_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("target_latents", pa.list_(pa.int32())),
        ("target_values", pa.list_(pa.float32())),
        ("base_latents", pa.list_(pa.int32())),
        ("base_values", pa.list_(pa.float32())),
        ("target_tokens", pa.int32()),
        ("base_tokens", pa.int32()),
        ("pooled_target", pa.int32()),
        ("pooled_base", pa.int32()),
    ]
)


@dataclass(frozen=True)
class DiffRow:
    row_id: str
    prompt: list[ChatMessage]
    target: str
    base: str
    raw_prompt: str


@dataclass
class ShardStats:
    """Counters of one computed shard, stored in its done marker so cached shards still count in summaries."""

    batches: int = 0
    forward_tokens: int = 0  # real tokens run through the model
    padded_tokens: int = 0  # batch rows x width: what the model computed, padding included
    forward_seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "forward_tokens": self.forward_tokens,
            "padded_tokens": self.padded_tokens,
            "forward_seconds": self.forward_seconds,
            "dropped": self.dropped,
        }


def _parse_prompt(raw: str, row_id: str) -> list[ChatMessage]:
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"row {row_id!r}: prompt is not JSON ({exc}); it must be a JSON array of {{role, content}}"
        ) from exc
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise UserError(f'row {row_id!r}: prompt must be a JSON array of {{"role": str, "content": str}} objects')
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_rows(table: pa.Table | None) -> list[DiffRow]:
    if table is None:
        raise UserError("a diff job needs its rows as the message payload (columns row_id, prompt, target, base)")
    missing = [c for c in _INPUT_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"diff input lacks column(s) {', '.join(missing)}; it needs {', '.join(_INPUT_COLUMNS)}")
    columns = {}
    for name in _INPUT_COLUMNS:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise UserError(f"diff input column {name} must be utf8 strings, not {column.type}")
        if column.null_count:
            raise UserError(f"diff input column {name} has {column.null_count} null value(s)")
        columns[name] = column.to_pylist()
    ids = columns["row_id"]
    if len(set(ids)) != len(ids):
        raise UserError("diff input row_id values must be unique")
    if not ids:
        raise UserError("diff input has no rows")
    return [
        DiffRow(row_id, _parse_prompt(prompt, row_id), target, base, prompt)
        for row_id, prompt, target, base in zip(ids, columns["prompt"], columns["target"], columns["base"], strict=True)
    ]


def _tokenize_row(
    backend: ModelBackend, row: DiffRow, params: DiffParams
) -> tuple[TokenizedSequence, TokenizedSequence]:
    target = backend.tokenize_chat([*row.prompt, {"role": "assistant", "content": row.target}], params.system_prompt)
    base = backend.tokenize_chat([*row.prompt, {"role": "assistant", "content": row.base}], params.system_prompt)
    if params.pooling.truncate_to_shorter:
        target, base = truncate_pair(target, base)
    return target, base


def _list_array(pieces: Sequence[np.ndarray], dtype: pa.DataType) -> pa.ListArray:
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int32, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=dtype))


def compute_shard(
    rows: Sequence[DiffRow],
    backend: ModelBackend,
    sae: SAE,
    target: Target,
    params: DiffParams,
    on_sequences: Callable[[int], None],
) -> tuple[pa.Table, ShardStats]:
    """Pooled sparse latents of every row's target and base sequences (sequence 2i = target, 2i + 1 = base).
    `on_sequences(n)` is called with the number of sequences finished so far (for progress)."""
    seqs: list[TokenizedSequence] = []
    for row in rows:
        seqs.extend(_tokenize_row(backend, row, params))
    latents: list[np.ndarray] = [np.zeros(0, np.int32)] * len(seqs)
    values: list[np.ndarray] = [np.zeros(0, np.float32)] * len(seqs)
    pooled = [0] * len(seqs)
    stats = ShardStats()
    chunk = encode_chunk_tokens(sae)
    finished = 0
    for indices in pack_by_length([len(s) for s in seqs], params.token_budget):
        start = time.perf_counter()
        batch = make_batch([seqs[i] for i in indices], backend.pad_id, backend.device)
        resid, selection = forward_and_select(backend, batch, target.block, params.pooling, params.token_budget)
        means, counts = mean_pool(resid, selection.keep, sae.encode, sae.d_sae, chunk)
        nonzero = means.nonzero()
        nz_values = means[nonzero[:, 0], nonzero[:, 1]].cpu().numpy()
        nz = nonzero.cpu().numpy()
        # nonzero() is row-major, so each batch row's entries are contiguous and sorted by latent.
        bounds = np.searchsorted(nz[:, 0], np.arange(len(indices) + 1))
        for j, i in enumerate(indices):
            latents[i] = nz[bounds[j] : bounds[j + 1], 1].astype(np.int32)
            values[i] = nz_values[bounds[j] : bounds[j + 1]].astype(np.float32)
        for j, count in enumerate(counts.tolist()):
            pooled[indices[j]] = int(count)
        stats.batches += 1
        stats.forward_tokens += sum(batch.lengths)
        stats.padded_tokens += int(batch.input_ids.numel())
        for reason, n in selection.dropped.items():
            stats.dropped[reason] += n
        stats.forward_seconds += time.perf_counter() - start
        finished += len(indices)
        on_sequences(finished)
    table = pa.table(
        {
            "row_id": pa.array([r.row_id for r in rows], pa.string()),
            "target_latents": _list_array(latents[0::2], pa.int32()),
            "target_values": _list_array(values[0::2], pa.float32()),
            "base_latents": _list_array(latents[1::2], pa.int32()),
            "base_values": _list_array(values[1::2], pa.float32()),
            "target_tokens": pa.array([len(s) for s in seqs[0::2]], pa.int32()),
            "base_tokens": pa.array([len(s) for s in seqs[1::2]], pa.int32()),
            "pooled_target": pa.array(pooled[0::2], pa.int32()),
            "pooled_base": pa.array(pooled[1::2], pa.int32()),
        },
        schema=CACHE_SCHEMA,
    )
    return table, stats


def _flat(table: pa.Table, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, latent, value) of every stored entry of one side ("target" or "base")."""
    latents = table.column(f"{side}_latents").combine_chunks()
    lengths = pc.list_value_length(latents).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(table.num_rows), lengths)
    flat_latents = pc.list_flatten(latents).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_values = pc.list_flatten(table.column(f"{side}_values").combine_chunks()).to_numpy(zero_copy_only=False)
    return rows, flat_latents, flat_values


def _row_top(table: pa.Table, d_sae: int, k: int) -> pa.Table:
    """Each row's k latents of largest positive (target - base), over all latents."""
    t_rows, t_lat, t_val = _flat(table, "target")
    b_rows, b_lat, b_val = _flat(table, "base")
    row_ids = table.column("row_id").to_pylist()
    out_rows: list[str] = []
    out_rank: list[np.ndarray] = []
    out_latent: list[np.ndarray] = []
    out_diff: list[np.ndarray] = []
    for lo in range(0, table.num_rows, _DENSE_ROWS):
        hi = min(lo + _DENSE_ROWS, table.num_rows)
        dense = torch.zeros((hi - lo, d_sae), dtype=torch.float32)
        for rows, lat, val, sign in ((t_rows, t_lat, t_val, 1.0), (b_rows, b_lat, b_val, -1.0)):
            m = (rows >= lo) & (rows < hi)
            dense.index_put_(
                (torch.from_numpy(rows[m] - lo), torch.from_numpy(lat[m])),
                torch.from_numpy(val[m].astype(np.float32) * sign),
                accumulate=True,
            )
        top = dense.topk(min(k, d_sae), dim=1)
        for j in range(hi - lo):
            positive = top.values[j] > 0
            n = int(positive.sum())
            out_rows.extend([row_ids[lo + j]] * n)
            out_rank.append(np.arange(1, n + 1, dtype=np.int32))
            out_latent.append(top.indices[j][positive].numpy().astype(np.int32))
            out_diff.append(top.values[j][positive].numpy())
    return pa.table(
        {
            "row_id": pa.array(out_rows, pa.string()),
            "rank": pa.array(np.concatenate(out_rank) if out_rank else [], pa.int32()),
            "latent": pa.array(np.concatenate(out_latent) if out_latent else [], pa.int32()),
            "diff": pa.array(np.concatenate(out_diff) if out_diff else [], pa.float32()),
        }
    )


def _example_features(table: pa.Table, top_latents: np.ndarray, d_sae: int) -> pa.Table:
    """Every row's (target, base) values on the top latents, where either is non-zero; rows in input order,
    latents in feature-rank order."""
    n = len(top_latents)
    position = np.full(d_sae, -1, dtype=np.int64)
    position[top_latents] = np.arange(n)
    keyed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for side in ("target", "base"):
        rows, lat, val = _flat(table, side)
        p = position[lat]
        m = p >= 0
        keyed[side] = (rows[m] * n + p[m], val[m])
    keys = np.union1d(keyed["target"][0], keyed["base"][0])
    sides = {}
    for side, (side_keys, side_values) in keyed.items():
        filled = np.zeros(len(keys), dtype=np.float32)
        filled[np.searchsorted(keys, side_keys)] = side_values
        sides[side] = filled
    row_ids = np.array(table.column("row_id").to_pylist(), dtype=object)
    return pa.table(
        {
            "row_id": pa.array(row_ids[keys // n] if len(keys) else [], pa.string()),
            "latent": pa.array(top_latents[keys % n], pa.int32()),
            "target": pa.array(sides["target"], pa.float32()),
            "base": pa.array(sides["base"], pa.float32()),
            "diff": pa.array(sides["target"] - sides["base"], pa.float32()),
        }
    )


@dataclass(frozen=True)
class _Shard:
    index: int
    key: str
    rows: Sequence[DiffRow]


def run_diff(params: DiffParams, rows: Sequence[DiffRow], resources: Resources, out: JobOutput) -> dict[str, Any]:
    started = time.perf_counter()
    target = resolve_target(params.model, params.device, params.sae, params.block, resources)
    job_identity = {
        "cache_version": CACHE_VERSION,
        **activation_identity(params.model, params.sae, target, params.pooling, params.system_prompt, resources),
    }
    job_key = stable_hash(job_identity)
    cache = ShardCache(params.cache_dir, f"diff-{job_key[:16]}")
    cache.write_note(f"diff-{job_key[:16]}.json", job_identity)
    shards = [
        _Shard(
            i,
            stable_hash([job_key, [[r.row_id, r.raw_prompt, r.target, r.base] for r in chunk]])[:32],
            chunk,
        )
        for i, chunk in enumerate(rows[s : s + params.shard_rows] for s in range(0, len(rows), params.shard_rows))
    ]
    todo = [s for s in shards if not cache.is_done(s.key)]
    load_seconds = 0.0
    this_run = ShardStats()
    if todo:
        load_start = time.perf_counter()
        backend, sae = load_models(params.model, params.sae, target, resources)
        load_seconds = time.perf_counter() - load_start
        progress = Progress(out, "forward", len(rows))
        done_rows = len(rows) - sum(len(s.rows) for s in todo)
        progress.update(done_rows)
        for shard in todo:

            def on_sequences(finished: int, before: int = done_rows) -> None:
                progress.update(before + finished // 2)

            table, stats = compute_shard(shard.rows, backend, sae, target, params, on_sequences)
            cache.write(shard.key, table, stats.as_dict())
            this_run.forward_tokens += stats.forward_tokens
            this_run.forward_seconds += stats.forward_seconds
            done_rows += len(shard.rows)
            progress.update(done_rows)
    finalize_start = time.perf_counter()
    summary = _finalize(params, target, rows, shards, cache, out)
    summary.update(
        {
            "job": "diff",
            "shards": len(shards),
            "cached_shards": len(shards) - len(todo),
            "computed_shards": len(todo),
            "cache_key": job_key[:16],
            **target.describe(params.sae),
            "pooling": params.pooling.as_dict(),
            "system_prompt": params.system_prompt,
            "top_n": params.top_n,
            "row_top_k": params.row_top_k,
            "forward_tokens_per_second": (
                this_run.forward_tokens / this_run.forward_seconds if this_run.forward_seconds > 0 else None
            ),
            "seconds": {
                "total": time.perf_counter() - started,
                "load": load_seconds,
                "forward": this_run.forward_seconds,
                "finalize": time.perf_counter() - finalize_start,
            },
        }
    )
    return summary


def _finalize(
    params: DiffParams,
    target: Target,
    rows: Sequence[DiffRow],
    shards: Sequence[_Shard],
    cache: ShardCache,
    out: JobOutput,
) -> dict[str, Any]:
    d_sae = target.sae_config.d_sae
    sums = {"target": np.zeros(d_sae, np.float64), "base": np.zeros(d_sae, np.float64)}
    token_tables: list[pa.Table] = []
    totals = ShardStats()
    progress = Progress(out, "summarise", len(shards), unit="shards")
    for shard in shards:
        table = cache.read(shard.key)
        for side in sums:
            _, lat, val = _flat(table, side)
            sums[side] += np.bincount(lat, weights=val, minlength=d_sae)
        out.result("row_top", _row_top(table, d_sae, params.row_top_k), final=shard is shards[-1])
        token_tables.append(table.select(["row_id", "target_tokens", "base_tokens", "pooled_target", "pooled_base"]))
        stats = cache.stats(shard.key)
        for name in ("batches", "forward_tokens", "padded_tokens"):
            setattr(totals, name, getattr(totals, name) + int(stats[name]))
        for reason, n in stats["dropped"].items():
            totals.dropped[reason] = totals.dropped.get(reason, 0) + int(n)
        progress.update(shard.index + 1)

    n_rows = len(rows)
    mean_target = sums["target"] / n_rows
    mean_base = sums["base"] / n_rows
    mean_diff = mean_target - mean_base
    # Stable sort on the negated diff: ties keep ascending latent ids, so the order is deterministic.
    top = np.argsort(-mean_diff, kind="stable")[: params.top_n]
    out.result(
        "features",
        pa.table(
            {
                "latent": pa.array(top, pa.int32()),
                "rank": pa.array(np.arange(1, len(top) + 1), pa.int32()),
                "mean_target": pa.array(mean_target[top], pa.float64()),
                "mean_base": pa.array(mean_base[top], pa.float64()),
                "mean_diff": pa.array(mean_diff[top], pa.float64()),
            }
        ),
        final=True,
    )
    for shard in shards:
        out.result("example_features", _example_features(cache.read(shard.key), top, d_sae), final=shard is shards[-1])
    tokens = pa.concat_tables(token_tables)
    out.result("tokens", tokens, final=True)

    def total(column: str) -> int:
        return int(pc.sum(tokens.column(column)).as_py() or 0)

    def zeros(column: str) -> int:
        return int(pc.sum(pc.equal(tokens.column(column), 0)).as_py() or 0)

    # Counts over every shard, cached or computed now: they describe the pooled vectors the results come from.
    return {
        "rows": n_rows,
        "tokens": {
            "target": total("target_tokens"),
            "base": total("base_tokens"),
            "pooled_target": total("pooled_target"),
            "pooled_base": total("pooled_base"),
            "forward": totals.forward_tokens,
            "padded": totals.padded_tokens,
        },
        "batches": totals.batches,
        "dropped": totals.dropped,
        "rows_with_empty_pool": {"target": zeros("pooled_target"), "base": zeros("pooled_base")},
    }
