"""`python -m inoculant_sae` as a subprocess: jobs on the planted model over the real stdin/stdout protocol."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from inoculant_sae.testing.planted import PLANTED

from .conftest import FIXTURES, rows_table
from .sidecar_process import Sidecar, tables


def test_diff_then_harvest_over_the_protocol(planted: dict[str, Any], tmp_path: Path) -> None:
    sidecar = Sidecar()
    try:
        assert sidecar.hello.type == "hello" and sidecar.hello.header["protocol"] == 1
        params = dict(planted["diff_params"], cache_dir=str(tmp_path / "cache"))
        frames = sidecar.run("d1", "diff", params, rows_table(planted))
        assert all(f.header["id"] == "d1" for f in frames)
        done = frames[-1]
        assert done.type == "done", done.header
        progress = [f.header for f in frames if f.type == "progress" and f.header["phase"] == "forward"]
        assert progress and progress[-1]["done"] == progress[-1]["total"] == 8 and progress[-1]["unit"] == "rows"
        results = tables(frames)
        assert set(results) == {"features", "example_features", "row_top", "tokens"}
        finals = [f.header["name"] for f in frames if f.type == "result" and f.header["final"]]
        assert sorted(finals) == sorted(results)
        top3 = sorted(results["features"].column("latent").to_pylist()[:3])
        assert top3 == sorted(PLANTED.values())
        assert results["tokens"].num_rows == 8
        assert done.header["summary"]["encode"] == "threshold" and done.header["summary"]["rows"] == 8

        harvest = sidecar.run("h1", "harvest", dict(planted["harvest_params"], cache_dir=str(tmp_path / "harvest")))
        assert harvest[-1].type == "done", harvest[-1].header
        examples = tables(harvest)["feature_examples"]
        assert set(examples.column("latent").to_pylist()) == set(PLANTED.values())

        bad = sidecar.run("x1", "diff", dict(params, block=9), rows_table(planted))
        assert bad[-1].type == "error" and bad[-1].header["kind"] == "user"
        assert "sae.block 9 disagrees with the SAE" in bad[-1].header["message"]
        assert sidecar.shutdown() == 0
    finally:
        if sidecar.proc.poll() is None:
            sidecar.kill()


NOISY_PLUGIN = """
import os
print("noise from a print at import")
os.write(1, b"noise written straight to file descriptor 1\\n")

from inoculant_sae.testing.planted import load_backend as _load


def load_backend(options, device):
    print("noise from load_backend")
    return _load(options, device)
"""


def test_stray_output_never_reaches_the_frames(planted: dict[str, Any], tmp_path: Path) -> None:
    plugin = tmp_path / "noisy.py"
    plugin.write_text(NOISY_PLUGIN)
    params = copy.deepcopy(planted["diff_params"])
    params["model"]["file"] = str(plugin)
    params["cache_dir"] = str(tmp_path / "cache")
    sidecar = Sidecar()
    try:
        frames = sidecar.run("n1", "diff", params, rows_table(planted))
        assert frames[-1].type == "done", frames[-1].header
        assert sidecar.shutdown() == 0
        log = sidecar.stderr()
        assert "noise from a print at import" in log and "file descriptor 1" in log and "noise from load_backend" in log
    finally:
        if sidecar.proc.poll() is None:
            sidecar.kill()


def test_bug_errors_carry_a_traceback(planted: dict[str, Any], tmp_path: Path) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text(
        "from inoculant_sae.testing.planted import PlantedBackend\n\n"
        "class Broken(PlantedBackend):\n"
        "    def residual(self, batch, block):\n"
        "        raise RuntimeError('the model broke')\n\n"
        "def load_backend(options, device):\n"
        "    return Broken(device)\n"
    )
    params = copy.deepcopy(planted["diff_params"])
    params["model"]["file"] = str(plugin)
    params["cache_dir"] = str(tmp_path / "cache")
    sidecar = Sidecar()
    try:
        error = sidecar.run("b1", "diff", params, rows_table(planted))[-1].header
        assert (error["type"], error["kind"], error["id"]) == ("error", "bug", "b1")
        assert "RuntimeError: the model broke" in error["message"]
        assert "Traceback" in error["traceback"] and "residual" in error["traceback"]
        # The sidecar keeps serving after a bug.
        params["model"]["file"] = str(FIXTURES / "planted_model.py")
        assert sidecar.run("b2", "diff", params, rows_table(planted))[-1].type == "done"
        assert sidecar.shutdown() == 0
    finally:
        if sidecar.proc.poll() is None:
            sidecar.kill()
