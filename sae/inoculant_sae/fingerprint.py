"""Cheap, stable fingerprints of files and configs, for cache keys.

Small files are hashed by content; big ones (multi-GB weights) by size and modification time, which changes
whenever a download replaces them and costs nothing to read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import UserError

_HASH_CONTENT_BELOW = 64 * 1024 * 1024


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def fingerprint_file(path: Path) -> str:
    stat = path.stat()
    if stat.st_size >= _HASH_CONTENT_BELOW:
        return f"size={stat.st_size};mtime_ns={stat.st_mtime_ns}"
    return "sha256=" + hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint_dir(path: Path) -> dict[str, str]:
    """Fingerprints of the regular files directly in `path` (a model snapshot or an SAE folder)."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory: pass the local folder that holds the files")
    return {
        child.name: fingerprint_file(child)
        for child in sorted(path.iterdir())
        if child.is_file() and not child.name.startswith(".")
    }
