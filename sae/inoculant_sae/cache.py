"""Per-shard result cache with done markers (datatrove-style): a killed job resumes at its first unfinished
shard, and a rerun that changes only how results are summarised (top_n, row_top_k) reads every shard from here.

Each shard is an Arrow IPC file written to a temporary name and renamed, then a `.done` marker holding the
shard's counters is written the same way; a shard counts as finished only when its marker exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import UserError


class ShardCache:
    def __init__(self, root: Path, prefix: str) -> None:
        self._root = root
        self._prefix = prefix

    def _data(self, key: str) -> Path:
        return self._root / f"{self._prefix}-{key}.arrow"

    def _marker(self, key: str) -> Path:
        return self._root / f"{self._prefix}-{key}.done"

    def is_done(self, key: str) -> bool:
        return self._marker(key).is_file() and self._data(key).is_file()

    def read(self, key: str) -> pa.Table:
        with pa.memory_map(str(self._data(key)), "r") as source:
            return pa.ipc.open_file(source).read_all()

    def stats(self, key: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._marker(key).read_text(encoding="utf-8"))
        return data

    def write(self, key: str, table: pa.Table, stats: dict[str, Any]) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            data = self._data(key)
            tmp = data.with_name(f"{data.name}.tmp-{os.getpid()}")
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            os.replace(tmp, data)
            marker = self._marker(key)
            tmp_marker = marker.with_name(f"{marker.name}.tmp-{os.getpid()}")
            tmp_marker.write_text(json.dumps(stats, sort_keys=True), encoding="utf-8")
            os.replace(tmp_marker, marker)
        except OSError as exc:
            raise UserError(
                f"cannot write the cache in {self._root}: {exc}; set cache_dir to a writable folder"
            ) from exc

    def write_note(self, name: str, content: dict[str, Any]) -> None:
        """A JSON file beside the shards (the resolved configuration, for people reading the cache)."""
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            (self._root / name).write_text(json.dumps(content, indent=2, sort_keys=True, default=str), encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"cannot write the cache in {self._root}: {exc}; set cache_dir to a writable folder"
            ) from exc
