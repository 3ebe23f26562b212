"""rskd bench on a tiny setting: every method timed, every number finite."""

from __future__ import annotations

import json
import math

import pytest

from rskd_tutorial.bench import DETECTION_METHODS, bench_detection, bench_main, format_table


@pytest.mark.slow
def test_bench_table_has_every_method_and_finite_numbers(tmp_path):
    records = bench_detection(DETECTION_METHODS, detector="retinanet", profile="ci", steps=1, warmup=0,
                              batch_size=2)
    assert [r["method"] for r in records] == list(DETECTION_METHODS)
    for r in records:
        numbers = [r["step_ms"], r["teacher_forward_ms"], r["peak_mb"], r["images_per_s"]]
        if r["method"] != "student":
            numbers += [r["kd_overhead_ms"], r["kd_forward_total_ms"], r["slowdown"]]
            assert r["kd_forward_ms"], f"no KD term was timed for {r['method']}"
        assert all(math.isfinite(x) for x in numbers), r
        assert r["step_ms"] > 0
    table = format_table(records)
    assert all(m in table for m in DETECTION_METHODS)


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_main(["--method", "student", "fitnet", "--profile", "ci", "--steps", "1", "--warmup", "0",
                       "--batch-size", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["records"]] == ["student", "fitnet"]
    assert "fitnet" in capsys.readouterr().out
