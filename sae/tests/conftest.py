"""Shared fixtures: the planted-signal model files and helpers to run jobs in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from inoculant_sae.jobs.output import CollectedOutput
from inoculant_sae.jobs.registry import JOBS
from inoculant_sae.jobs.resources import LoadingResources, Resources
from inoculant_sae.testing.planted import write_fixture

SAE_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = SAE_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The planted fixture written once per session (dictionary_learning SAE); see inoculant_sae.testing.planted."""
    return write_fixture(tmp_path_factory.mktemp("planted"))


def rows_table(manifest: dict[str, Any]) -> pa.Table:
    rows = [json.loads(line) for line in Path(manifest["rows"]).read_text().splitlines()]
    return pa.Table.from_pylist(
        rows, schema=pa.schema([(c, pa.string()) for c in ("row_id", "prompt", "target", "base")])
    )


def run_job(
    name: str,
    params: dict[str, Any],
    payload: pa.Table | None = None,
    resources: Resources | None = None,
    out: CollectedOutput | None = None,
) -> tuple[dict[str, Any], CollectedOutput]:
    out = out if out is not None else CollectedOutput()
    summary = JOBS[name](params, payload, resources if resources is not None else LoadingResources(), out)
    return summary, out
