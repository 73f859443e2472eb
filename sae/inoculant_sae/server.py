"""The protocol loop: say hello, then run each job message in order until `shutdown` or end of input."""

from __future__ import annotations

import sys
import traceback
from typing import Any, BinaryIO

import pyarrow as pa
import torch

from . import protocol
from .device import dtype_name, resolve_device, resolve_dtype
from .errors import UserError
from .jobs.registry import JOBS
from .jobs.resources import LoadingResources, Resources
from .protocol import Frame, FrameWriter, ProtocolError, VersionMismatch


class FrameOutput:
    """JobOutput that writes protocol frames for one job."""

    def __init__(self, writer: FrameWriter, job_id: str) -> None:
        self._writer = writer
        self._id = job_id

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self._writer.write(protocol.progress(self._id, phase, done, total, unit))

    def result(self, name: str, table: pa.Table, final: bool) -> None:
        self._writer.write(protocol.result(self._id, name, final), table)


def hello_header() -> dict[str, Any]:
    device = resolve_device("auto")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return protocol.hello(str(device), dtype_name(resolve_dtype("auto", device)), torch.__version__, gpu)


def run_job(frame: Frame, writer: FrameWriter, resources: Resources) -> None:
    job_id = frame.header.get("id")
    if not isinstance(job_id, str):
        writer.write(protocol.error(None, "bug", "job message without a string 'id'", None))
        return
    name = frame.header.get("job")
    job = JOBS.get(name) if isinstance(name, str) else None
    try:
        if job is None:
            raise UserError(f"unknown job {name!r}; known jobs: {', '.join(JOBS)}")
        summary = job(frame.header.get("params"), frame.payload, resources, FrameOutput(writer, job_id))
    except UserError as exc:
        writer.write(protocol.error(job_id, "user", str(exc), None))
    except Exception as exc:
        text = traceback.format_exc()
        print(text, file=sys.stderr)
        writer.write(protocol.error(job_id, "bug", f"{type(exc).__name__}: {exc}", text))
    else:
        writer.write(protocol.done(job_id, summary))


def serve(stdin: BinaryIO, writer: FrameWriter, resources: Resources | None = None) -> int:
    """Exit status: 0 after shutdown or end of input, 2 when the peer breaks the protocol."""
    resources = resources if resources is not None else LoadingResources()
    writer.write(hello_header())
    while True:
        try:
            frame = protocol.read_frame(stdin)
        except VersionMismatch as exc:
            writer.write(protocol.error(None, "user", str(exc), None))
            return 2
        except ProtocolError as exc:
            writer.write(protocol.error(None, "bug", f"malformed message: {exc}", None))
            return 2
        if frame is None or frame.type == "shutdown":
            return 0
        if frame.type == "job":
            run_job(frame, writer, resources)
        else:
            writer.write(
                protocol.error(None, "bug", f"unexpected message type {frame.type!r} (expected job or shutdown)", None)
            )


def main() -> int:
    frames = protocol.claim_stdout()
    return serve(sys.stdin.buffer, FrameWriter(frames))
