"""The benchmark runs end to end with tiny shapes on the CPU (its CUDA numbers come from GPU hosts)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import SAE_ROOT


def test_bench_diff_tiny_on_cpu(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_diff", SAE_ROOT / "bench" / "bench_diff.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_diff", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    report = bench.main(["--device", "cpu", "--tiny", "--rows", "6", "--naive-rows", "2"])
    printed = capsys.readouterr().out
    for label in ("ours", "naive (reference)", "ratio", "H100 bf16 roofline", "peak GPU memory"):
        assert label in printed
    assert report["ours_tokens_per_second"] > 0 and report["naive_tokens_per_second"] > 0
    assert report["speedup"] == pytest.approx(report["ours_tokens_per_second"] / report["naive_tokens_per_second"])
    assert bench.TINY.seq_min - 5 <= report["mean_sequence_tokens"] <= bench.TINY.seq_max + 5
    flops = bench.flops_per_token(bench.QWEN25_7B, context=225)
    assert 8.0e9 < flops["total"] < 9.0e9 and flops["sae"] == 2 * 3584 * 131072
