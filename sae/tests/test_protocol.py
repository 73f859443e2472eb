from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest

from inoculant_sae import protocol
from inoculant_sae.protocol import FrameWriter, ProtocolError, VersionMismatch, encode_frame, read_frame
from inoculant_sae.server import serve
from inoculant_sae.testing.recording import RecordedFrame, expected, job_frames, session_frames

from .conftest import FIXTURES

RECORDED = FIXTURES / "recorded"


def read_all(data: bytes) -> list[protocol.Frame]:
    stream = io.BytesIO(data)
    frames = []
    while (frame := read_frame(stream)) is not None:
        frames.append(frame)
    return frames


def test_frames_round_trip_with_and_without_payload() -> None:
    table = pa.table({"a": pa.array([1, 2], pa.int32()), "s": pa.array(["x\ny", "ü"])})
    data = encode_frame({"type": "result", "id": "j", "name": "t", "final": True}, table) + encode_frame(
        {"type": "progress", "id": "j", "note": "two\nlines"}
    )
    first, second = read_all(data)
    assert first.header["v"] == 1 and first.header["payload_bytes"] > 0
    assert first.payload is not None and first.payload.equals(table)
    assert second.payload is None and "payload_bytes" not in second.header
    assert second.header["note"] == "two\nlines"
    # The header is one line even when strings hold newlines.
    assert data.count(b"\n") >= 2 and data.split(b"\n", 1)[0].endswith(b"}")


def test_payload_bytes_is_set_only_from_the_payload() -> None:
    frame = read_all(encode_frame({"type": "progress", "payload_bytes": 99}))[0]
    assert "payload_bytes" not in frame.header and frame.payload is None


def test_other_protocol_version_is_refused() -> None:
    with pytest.raises(VersionMismatch, match="v=2"):
        read_frame(io.BytesIO(b'{"v":2,"type":"job"}\n'))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json\n", "not JSON"),
        (b'{"v":1}\n', "type"),
        (b'{"v":1,"type":"job"}', "inside a header"),
        (b'{"v":1,"type":"job","payload_bytes":10}\n12345', "5 bytes before the end"),
        (b'{"v":1,"type":"job","payload_bytes":-3}\n', "positive integer"),
        (b'{"v":1,"type":"job","payload_bytes":4}\nabcd', "Arrow"),
    ],
)
def test_malformed_frames_raise(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        read_frame(io.BytesIO(data))


@pytest.mark.parametrize("name, frames", [("session", session_frames()), ("job", job_frames())])
def test_recorded_files_decode_to_the_recorded_frames(name: str, frames: list[RecordedFrame]) -> None:
    decoded = read_all((RECORDED / f"{name}.bin").read_bytes())
    want = json.loads((RECORDED / "expected.json").read_text(encoding="utf-8"))[name]
    assert want == expected(frames), "expected.json is stale: rerun python -m inoculant_sae.testing.recording"
    assert len(decoded) == len(want)
    for frame, item in zip(decoded, want, strict=True):
        header = {k: v for k, v in frame.header.items() if k != "payload_bytes"}
        assert header == item["header"]
        assert (frame.payload.to_pylist() if frame.payload is not None else None) == item["payload"]


def test_session_recording_has_every_sidecar_message_type() -> None:
    types = {h["type"] for h, _ in session_frames()}
    assert types == {"hello", "progress", "result", "done", "error"}


def serve_bytes(data: bytes) -> tuple[int, list[protocol.Frame]]:
    out = io.BytesIO()
    status = serve(io.BytesIO(data), FrameWriter(out))
    return status, read_all(out.getvalue())


def test_server_says_hello_then_exits_on_shutdown() -> None:
    status, frames = serve_bytes(encode_frame({"type": "shutdown"}) + encode_frame({"type": "job", "id": "late"}))
    assert status == 0
    assert [f.type for f in frames] == ["hello"]
    assert frames[0].header["protocol"] == 1 and frames[0].header["device"] in ("cpu", "cuda:0")


def test_server_exits_at_end_of_input() -> None:
    status, frames = serve_bytes(b"")
    assert status == 0 and [f.type for f in frames] == ["hello"]


def test_server_answers_a_version_mismatch_with_an_error_and_stops() -> None:
    status, frames = serve_bytes(b'{"v":99,"type":"job","id":"x"}\n' + encode_frame({"type": "shutdown"}))
    assert status == 2
    assert frames[-1].type == "error" and frames[-1].header["kind"] == "user"
    assert "v=99" in frames[-1].header["message"]


def test_server_reports_bad_jobs_as_user_errors_and_keeps_serving() -> None:
    data = (
        encode_frame({"type": "job", "id": "a", "job": "train", "params": {}})
        + encode_frame({"type": "job", "id": "b", "job": "diff", "params": {"device": "cpu"}})
        + encode_frame({"type": "job", "id": "c", "job": "harvest", "params": {"latents": []}})
        + encode_frame({"type": "shutdown"})
    )
    status, frames = serve_bytes(data)
    assert status == 0
    errors = [f.header for f in frames if f.type == "error"]
    assert [(e["id"], e["kind"]) for e in errors] == [("a", "user"), ("b", "user"), ("c", "user")]
    assert "unknown job 'train'" in errors[0]["message"]
    assert "params.model is required" in errors[1]["message"]
    assert "latents" in errors[2]["message"]
    assert all(e["traceback"] is None for e in errors)


def test_error_kind_is_checked() -> None:
    with pytest.raises(ValueError):
        protocol.error("x", "oops", "m", None)
