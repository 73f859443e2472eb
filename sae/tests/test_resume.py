"""A diff job that dies mid-way resumes at its first unfinished shard and never recomputes finished ones."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from inoculant_sae.backends.base import TokenBatch
from inoculant_sae.testing.planted import PlantedBackend

from .conftest import FIXTURES, rows_table, run_job
from .sidecar_process import Sidecar, tables


def params_for(manifest: dict[str, Any], cache: Path, **options: Any) -> dict[str, Any]:
    params: dict[str, Any] = copy.deepcopy(manifest["diff_params"])
    params["model"] = {"backend": "python", "file": str(FIXTURES / "planted_model.py"), "options": options}
    params["cache_dir"] = str(cache)
    return params


def test_crashed_job_resumes_from_finished_shards(
    planted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = rows_table(planted)
    cache = tmp_path / "cache"
    original = PlantedBackend.residual
    forwarded: list[int] = []  # sequences per forward call

    def dies_after_four_batches(self: PlantedBackend, batch: TokenBatch, block: int) -> Any:
        if len(forwarded) == 4:
            raise RuntimeError("killed")
        forwarded.append(batch.input_ids.shape[0])
        return original(self, batch, block)

    monkeypatch.setattr(PlantedBackend, "residual", dies_after_four_batches)
    with pytest.raises(RuntimeError, match="killed"):
        run_job("diff", params_for(planted, cache), rows)
    # 8 rows in shards of 4: the first shard (8 sequences) finished within the four batches, the second did not.
    assert sum(forwarded) > 8
    assert len(list(cache.glob("*.done"))) == 1
    assert not list(cache.glob("*.tmp-*"))

    def counts(self: PlantedBackend, batch: TokenBatch, block: int) -> Any:
        forwarded.append(batch.input_ids.shape[0])
        return original(self, batch, block)

    forwarded.clear()
    monkeypatch.setattr(PlantedBackend, "residual", counts)
    summary, resumed = run_job("diff", params_for(planted, cache), rows)
    assert (summary["cached_shards"], summary["computed_shards"]) == (1, 1)
    assert sum(forwarded) == 8  # only the second shard's 4 rows x (target, base)

    _, fresh = run_job("diff", params_for(planted, tmp_path / "fresh"), rows)
    for name in ("features", "example_features", "row_top", "tokens"):
        assert resumed.table(name).equals(fresh.table(name)), name


def test_killed_sidecar_resumes(planted: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # 4 shards of 2 rows; each forward sleeps, so the job is still running when the first marker appears.
    params = params_for(planted, cache, delay_s=0.25) | {"shard_rows": 2}
    rows = rows_table(planted)
    first = Sidecar()
    try:
        first.send({"type": "job", "id": "k1", "job": "diff", "params": params}, rows)
        deadline = time.monotonic() + 60
        while not list(cache.glob("*.done")):
            assert time.monotonic() < deadline, first.stderr()
            time.sleep(0.05)
    finally:
        first.kill()
    finished = len(list(cache.glob("*.done")))
    assert 1 <= finished < 4
    second = Sidecar()
    try:
        frames = second.run("k2", "diff", params, rows)
        done = frames[-1]
        assert done.type == "done", done.header
        summary = done.header["summary"]
        assert summary["cached_shards"] >= finished and summary["cached_shards"] + summary["computed_shards"] == 4
        assert summary["computed_shards"] >= 1
        assert tables(frames)["tokens"].num_rows == 8
        assert second.shutdown() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
