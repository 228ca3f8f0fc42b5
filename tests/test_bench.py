"""bench/engine.py in its reduced CPU form (tiny model, 64², 4 steps, batch 1/2): it runs, times, counts FLOPs
and writes its table, and says why the TensorRT variant is skipped. Performance figures come from GPU runs only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_engine_bench_reduced_cpu_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "engine.py"), "--device", "cpu", "--repeats", "2",
                           "--variants", "baseline,torch-fp16,trt-int8", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "engine.json").read_text())
    rows = {(r["variant"], r["batch"]): r for r in report["rows"]}
    assert set(rows) == {(v, b) for v in ("baseline", "torch-fp16", "trt-int8") for b in (1, 2)}
    for batch in (1, 2):
        base, torch_row = rows[("baseline", batch)], rows[("torch-fp16", batch)]
        assert base["speedup"] == 1.0 and base["engine_id"] == "diffusers-fp32-cpu"
        assert torch_row["engine_id"] == "torch-fp32-cpu"
        for row in (base, torch_row):
            assert row["ms_per_image"] > 0 and len(row["runs_ms"]) == 2
            assert abs(row["images_per_s"] * row["ms_per_image"] - 1000) < 1e-6 * 1000
            assert row["tflop_per_image"] > 0 and 0 < row["roofline"] < 2
        assert rows[("trt-int8", batch)]["ms_per_image"] is None
    assert "skipped:" in rows[("trt-int8", 1)]["note"]
    # The per-image arithmetic does not depend on the batch (same model, same shape).
    assert abs(rows[("baseline", 1)]["tflop_per_image"] / rows[("baseline", 2)]["tflop_per_image"] - 1) < 0.01
    table = (tmp_path / "engine.md").read_text()
    assert "| tiny | 64x64 | baseline |" in table and "roofline" in table
