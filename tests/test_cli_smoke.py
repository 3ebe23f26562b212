"""Every method's smoke configs end to end through ``rskd train`` / ``rskd eval`` in a subprocess, stage after
stage in one folder (teacher -> amplifier -> student, teacher -> student, teacher -> assistant -> student),
starting from nothing: the configs write their synthetic scenes themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import config, rskd

CHAINS = {
    "ds2d2": (["ds2d2_synthetic_retinanet_teacher", "ds2d2_synthetic_retinanet_amplifier",
               "ds2d2_synthetic_retinanet_student"], "student.pt"),
    "dipkd": (["dipkd_synthetic_retinanet_teacher", "dipkd_synthetic_retinanet_student"], "student.pt"),
    "scrkd": (["scrkd_synthetic_pspnet64_teacher", "scrkd_synthetic_pspnet16_cascade_64_32"],
              "stage2_student/final.pt"),
}
BUDGET_S = 120      # the bound for a smoke chain on a 2-core CPU


@pytest.mark.parametrize("method", sorted(CHAINS))
def test_smoke_chain_trains_and_evaluates(tmp_path: Path, method: str):
    stages, weights = CHAINS[method]
    t0 = time.perf_counter()
    for stem in stages:
        proc = rskd("train", config(method, stem), "--no-progress", cwd=tmp_path)
        assert proc.returncode == 0, f"{stem}: {proc.stderr[-3000:]}"
        assert (tmp_path / "runs" / stem / "final.pt").is_file() or (tmp_path / "runs" / stem / weights).is_file()
    seconds = time.perf_counter() - t0
    last = tmp_path / "runs" / stages[-1]
    final = last / weights
    state = torch.load(final, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    proc = rskd("eval", config(method, stages[-1]), final, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((final.parent / "eval.json").read_text())
    assert record["images"] == 4 and record["split"] in ("val", "test") and record["metrics"]
    assert seconds < 2 * BUDGET_S, f"{method} smoke chain took {seconds:.0f} s"   # x2: a shared CI machine
