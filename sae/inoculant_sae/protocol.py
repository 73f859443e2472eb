"""Wire format of the sidecar (PROTOCOL.md): one JSON header line per message, optionally followed by exactly
`payload_bytes` bytes holding one Arrow IPC stream.

Everything here works on binary streams so that the same code serves the real stdin/stdout, in-memory buffers
in tests, and the recorded session files that the TypeScript tests decode too.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

PROTOCOL_VERSION = 1

Header = dict[str, Any]


class ProtocolError(Exception):
    """The peer sent bytes that are not a well-formed frame."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version; the sidecar answers with an error and exits."""


@dataclass(frozen=True)
class Frame:
    header: Header
    payload: pa.Table | None = None

    @property
    def type(self) -> str:
        return str(self.header["type"])


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def ipc_to_table(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()


def encode_frame(header: Header, payload: pa.Table | None = None) -> bytes:
    """Serialise one message. `v` is filled in; `payload_bytes` is set from the payload, never by callers."""
    full: Header = {"v": PROTOCOL_VERSION, **header}
    full.pop("payload_bytes", None)
    body = b""
    if payload is not None:
        body = table_to_ipc(payload)
        full["payload_bytes"] = len(body)
    # json.dumps escapes newlines inside strings, so the header is always exactly one line.
    line = json.dumps(full, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return line.encode("utf-8") + b"\n" + body


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise ProtocolError(f"stream ended {left} bytes before the end of a {n}-byte payload")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> Frame | None:
    """Read one message; None at a clean end of stream (EOF between messages)."""
    line = stream.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("stream ended inside a header line")
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}; line starts {line[:80]!r}") from exc
    if not isinstance(header, dict) or "type" not in header:
        raise ProtocolError(f"header must be a JSON object with a 'type'; got {line[:80]!r}")
    if header.get("v") != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"peer speaks protocol v={header.get('v')!r}, this sidecar speaks v={PROTOCOL_VERSION}; "
            "install the sidecar that ships with this inoculant version (npm run setup:sidecar)"
        )
    size = header.get("payload_bytes")
    if size is None:
        return Frame(header)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ProtocolError(f"payload_bytes must be a positive integer, got {size!r}")
    data = _read_exactly(stream, size)
    try:
        table = ipc_to_table(data)
    except pa.ArrowInvalid as exc:
        raise ProtocolError(f"payload is not an Arrow IPC stream: {exc}") from exc
    return Frame(header, table)


class FrameWriter:
    """Writes whole frames and flushes each, so the reader never waits on a half-buffered message."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, header: Header, payload: pa.Table | None = None) -> None:
        data = encode_frame(header, payload)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for frames only and send everything else that writes to stdout to stderr.

    Python-level prints go through sys.stdout, but native libraries write to file descriptor 1 directly, so the
    descriptor itself is duplicated for frames and then pointed at stderr.
    """
    sys.stdout.flush()
    frames_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(frames_fd, "wb")


# Message constructors: one place that knows each message's fields.


def hello(device: str, dtype: str, torch_version: str, gpu: str | None) -> Header:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "python": platform.python_version(),
        "torch": torch_version,
        "device": device,
        "dtype": dtype,
        "gpu": gpu,
    }


def progress(job_id: str, phase: str, done: int, total: int, unit: str) -> Header:
    return {"type": "progress", "id": job_id, "phase": phase, "done": done, "total": total, "unit": unit}


def result(job_id: str, name: str, final: bool) -> Header:
    return {"type": "result", "id": job_id, "name": name, "final": final}


def done(job_id: str, summary: dict[str, Any]) -> Header:
    return {"type": "done", "id": job_id, "summary": summary}


def error(job_id: str | None, kind: str, message: str, traceback: str | None) -> Header:
    if kind not in ("user", "bug"):
        raise ValueError(f"error kind must be 'user' or 'bug', not {kind!r}")
    return {"type": "error", "id": job_id, "kind": kind, "message": message, "traceback": traceback}
