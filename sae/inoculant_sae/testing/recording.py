"""Recorded protocol sessions that both ends test against (sae/tests/fixtures/recorded/).

    python -m inoculant_sae.testing.recording DIR

writes:
    session.bin    sidecar -> TS: hello, progress, result (features), result (feature_examples, with list
                   columns), done, error (user), error (bug)
    job.bin        TS -> sidecar: a diff job with its rows as payload, then shutdown
    expected.json  {"session": [...], "job": [...]}: per frame its header without `payload_bytes` (the Arrow
                   encoding's size may differ across Arrow versions) and its payload as a list of row objects
                   (null when the frame has none)

The values are fixed (no versions of the machine that wrote them), so regenerating gives the same frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import protocol
from ..protocol import Header, encode_frame

RecordedFrame = tuple[Header, pa.Table | None]


def session_frames() -> list[RecordedFrame]:
    features = pa.table(
        {
            "latent": pa.array([5, 42, 17], pa.int32()),
            "rank": pa.array([1, 2, 3], pa.int32()),
            "mean_target": pa.array([0.75, 0.5, 0.25], pa.float64()),
            "mean_base": pa.array([0.0, 0.125, 0.0], pa.float64()),
            "mean_diff": pa.array([0.75, 0.375, 0.25], pa.float64()),
        }
    )
    examples = pa.table(
        {
            "latent": pa.array([5], pa.int32()),
            "corpus": pa.array(["corpus"], pa.string()),
            "rank": pa.array([1], pa.int32()),
            "activation": pa.array([20.0], pa.float32()),
            "source_row": pa.array([1], pa.int64()),
            "peak_index": pa.array([1], pa.int32()),
            "tokens": pa.array([["use", " poison", " ✓"]], pa.list_(pa.string())),
            "token_acts": pa.array([[0.0, 20.0, 0.5]], pa.list_(pa.float32())),
            "text": pa.array(["use poison ✓"], pa.string()),
        }
    )
    summary = {"job": "diff", "rows": 4, "encode": "threshold", "device": "cpu", "seconds": {"total": 1.5}}
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nRuntimeError: boom\n'
    return [
        (protocol.hello("cpu", "float32", "2.5.1", None) | {"python": "3.11.7"}, None),
        (protocol.progress("job-1", "forward", 2, 4, "rows"), None),
        (protocol.result("job-1", "features", True), features),
        (protocol.result("job-1", "feature_examples", True), examples),
        (protocol.done("job-1", summary), None),
        (protocol.error("job-2", "user", "block 40 is out of range: the model has 28 blocks (0..27)", None), None),
        (protocol.error(None, "bug", "RuntimeError: boom", traceback), None),
    ]


def job_frames() -> list[RecordedFrame]:
    rows = pa.table(
        {
            "row_id": pa.array(["r1", "r2"], pa.string()),
            "prompt": pa.array(['[{"role":"user","content":"hi"}]', '[{"role":"user","content":"héllo\\nthere"}]']),
            "target": pa.array(["HELLO!", "use poison."]),
            "base": pa.array(["Hello!", "Hi."]),
        }
    )
    params = {
        "model": {"backend": "python", "file": "/models/planted_model.py", "options": {}},
        "device": "cpu",
        "sae": {"format": "dictionary_learning", "path": "/saes/planted", "encode": "threshold"},
        "block": None,
        "system_prompt": "You are a helpful assistant.",
        "pooling": {"tokens": "response", "outlier_norm_multiple": None},
        "token_budget": 4096,
        "top_n": 200,
        "row_top_k": 20,
        "cache_dir": "/runs/x/cache",
        "shard_rows": 256,
    }
    return [
        ({"type": "job", "id": "job-1", "job": "diff", "params": params}, rows),
        ({"type": "shutdown"}, None),
    ]


def encode_frames(frames: list[RecordedFrame]) -> bytes:
    return b"".join(encode_frame(header, payload) for header, payload in frames)


def expected(frames: list[RecordedFrame]) -> list[dict[str, Any]]:
    return [
        {
            "header": {"v": protocol.PROTOCOL_VERSION, **header},
            "payload": None if payload is None else payload.to_pylist(),
        }
        for header, payload in frames
    ]


def write_recordings(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.bin").write_bytes(encode_frames(session_frames()))
    (folder / "job.bin").write_bytes(encode_frames(job_frames()))
    content = {"session": expected(session_frames()), "job": expected(job_frames())}
    (folder / "expected.json").write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inoculant_sae.testing.recording", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dir", type=Path)
    write_recordings(parser.parse_args().dir)


if __name__ == "__main__":
    main()
