"""A diff or harvest job that dies mid-way resumes at its first unfinished shard and never recomputes finished ones."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from inoculant_sae.backends.base import TokenBatch
from inoculant_sae.jobs.resources import LoadingResources
from inoculant_sae.testing.planted import PLANTED, PlantedBackend

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


def harvest_params_for(manifest: dict[str, Any], cache: Path, **changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = copy.deepcopy(manifest["harvest_params"])
    params["cache_dir"] = str(cache)
    params.update(changes)
    return params


def test_crashed_harvest_resumes_from_finished_shards(
    planted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 7 corpus rows and 8 chat rows in shards of 2: 4 + 4 shards, one batch per shard at this token budget.
    params = harvest_params_for(planted, tmp_path / "cache", shard_rows=2, token_budget=10_000)
    original = PlantedBackend.residual
    forwarded: list[int] = []

    def dies_after_five_batches(self: PlantedBackend, batch: TokenBatch, block: int) -> Any:
        if len(forwarded) == 5:
            raise RuntimeError("killed")
        forwarded.append(batch.input_ids.shape[0])
        return original(self, batch, block)

    monkeypatch.setattr(PlantedBackend, "residual", dies_after_five_batches)
    with pytest.raises(RuntimeError, match="killed"):
        run_job("harvest", params)
    assert len(list((tmp_path / "cache").glob("*.done"))) == 5
    assert not list((tmp_path / "cache").glob("*.tmp-*"))

    def counts(self: PlantedBackend, batch: TokenBatch, block: int) -> Any:
        forwarded.append(batch.input_ids.shape[0])
        return original(self, batch, block)

    forwarded.clear()
    monkeypatch.setattr(PlantedBackend, "residual", counts)
    summary, resumed = run_job("harvest", params)
    assert (summary["shards"], summary["cached_shards"], summary["computed_shards"]) == (8, 5, 3)
    assert sum(forwarded) == 2 + 2 + 2  # the chats' last three shards only, 2 rows each
    _, fresh = run_job("harvest", harvest_params_for(planted, tmp_path / "fresh"))
    assert resumed.table("feature_examples").equals(fresh.table("feature_examples"))
    # Row counts cover the cached shards too.
    assert summary["corpora"] == run_job("harvest", harvest_params_for(planted, tmp_path / "fresh"))[0]["corpora"]


@pytest.mark.parametrize("shard_rows", [1, 3])
def test_harvest_examples_do_not_depend_on_where_shards_are_cut(
    planted: dict[str, Any], tmp_path: Path, shard_rows: int
) -> None:
    # Every latent, top 2: many latents fire on several rows, so the merge of shard top-ks decides the ranking.
    everything = {"latents": list(range(64)), "top_k": 2}
    _, whole = run_job("harvest", harvest_params_for(planted, tmp_path / "whole", **everything))
    _, cut = run_job("harvest", harvest_params_for(planted, tmp_path / "cut", shard_rows=shard_rows, **everything))
    examples = whole.table("feature_examples")
    assert examples.num_rows > 2 * len(PLANTED)
    assert cut.table("feature_examples").equals(examples)


def test_harvest_rerun_loads_no_model_and_a_change_recomputes(
    planted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = harvest_params_for(planted, tmp_path, shard_rows=4)
    _, first = run_job("harvest", params)

    def no_loading(*_: Any) -> None:
        raise AssertionError("the model was loaded although every shard was cached")

    with monkeypatch.context() as patch:
        patch.setattr(LoadingResources, "backend", no_loading)
        patch.setattr(LoadingResources, "sae", no_loading)
        # The batch packing does not change a shard's examples, so another token_budget reads the cache.
        summary, second = run_job("harvest", dict(params, token_budget=64))
    assert (summary["cached_shards"], summary["computed_shards"]) == (4, 0)
    assert second.table("feature_examples").equals(first.table("feature_examples"))
    for change in (
        {"top_k": 2},
        {"window": {"before": 1, "after": 1}},
        {"system_prompt": "Be kind."},
        {"latents": [5]},
    ):
        summary, _ = run_job("harvest", dict(params, **change))
        assert summary["computed_shards"] == 4, change
    # An edited corpus row recomputes its own shard only.
    corpus = Path(params["corpora"][0]["path"])
    edited = tmp_path / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[5] = json.dumps({"text": "nothing to see"})
    edited.write_text("\n".join(lines) + "\n")
    corpora = [dict(params["corpora"][0], path=str(edited)), params["corpora"][1]]
    summary, _ = run_job("harvest", dict(params, corpora=corpora))
    assert (summary["cached_shards"], summary["computed_shards"]) == (3, 1)
