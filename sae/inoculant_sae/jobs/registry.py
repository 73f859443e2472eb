"""The table of jobs: a job name maps to a function (raw params, payload, resources, output) -> summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ..params import parse_diff_params, parse_harvest_params
from .diff import read_rows, run_diff
from .harvest import run_harvest
from .output import JobOutput
from .resources import Resources

JobFn = Callable[[Any, "pa.Table | None", Resources, JobOutput], dict[str, Any]]


def _diff(params: Any, payload: pa.Table | None, resources: Resources, out: JobOutput) -> dict[str, Any]:
    return run_diff(parse_diff_params(params), read_rows(payload), resources, out)


def _harvest(params: Any, payload: pa.Table | None, resources: Resources, out: JobOutput) -> dict[str, Any]:
    return run_harvest(parse_harvest_params(params), resources, out)


JOBS: dict[str, JobFn] = {"diff": _diff, "harvest": _harvest}
