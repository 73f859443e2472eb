"""Drive `python -m inoculant_sae` as a subprocess, the way the TypeScript side does."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from typing import Any, BinaryIO, cast

import pyarrow as pa

from inoculant_sae.protocol import Frame, encode_frame, read_frame


class Sidecar:
    def __init__(self) -> None:
        # stderr goes to a file: a pipe nobody reads could fill up and block the sidecar.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inoculant_sae"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.hello = self.read()

    def send(self, header: dict[str, Any], payload: pa.Table | None = None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_frame(header, payload))
        self.proc.stdin.flush()

    def read(self) -> Frame:
        assert self.proc.stdout is not None
        frame = read_frame(cast(BinaryIO, self.proc.stdout))
        if frame is None:
            raise AssertionError(f"sidecar closed its output; stderr:\n{self.stderr()}")
        return frame

    def run(self, job_id: str, job: str, params: dict[str, Any], payload: pa.Table | None = None) -> list[Frame]:
        """Send a job and return its frames up to and including its `done` or `error`."""
        self.send({"type": "job", "id": job_id, "job": job, "params": params}, payload)
        frames = []
        while True:
            frame = self.read()
            frames.append(frame)
            if frame.type in ("done", "error"):
                return frames

    def shutdown(self, timeout: float = 30) -> int:
        self.send({"type": "shutdown"})
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        """Everything the sidecar wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def tables(frames: list[Frame]) -> dict[str, pa.Table]:
    by_name: dict[str, list[pa.Table]] = {}
    for frame in frames:
        if frame.type == "result" and frame.payload is not None:
            by_name.setdefault(frame.header["name"], []).append(frame.payload)
    return {name: pa.concat_tables(parts) for name, parts in by_name.items()}
