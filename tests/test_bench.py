"""The benchmarks in their reduced CPU forms: bench/engine.py (tiny model, 64², 4 steps, batch 1/2) runs, times,
counts FLOPs, writes its table and says why the TensorRT variant is skipped; the GPU runner's --cpu-smoke rehearses
the device run's code paths; bench/pipeline.py measures a real worker against the engine alone. Performance figures
come from GPU runs only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_engine_bench_reduced_cpu_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "engine.py"),
            *"--device cpu --repeats 2 --variants baseline,torch-fp16,trt-int8".split(),
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
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


def _env() -> dict[str, str]:
    """One torch thread per process: the machine's 2 cores are shared with the rest of the suite."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


@pytest.mark.e2e
@pytest.mark.minute(3)
def test_gpu_runner_cpu_smoke(tmp_path: Path) -> None:
    """The GPU runner end to end on CPU (bench/gpu/run.sh --cpu-smoke): the engine part, CUDA-only variants
    skipped with the reason, the pipeline part through a real worker, a compile part killed at its time box, and
    results written the way the device tool brings them back (at most 8 files, no deeper than the folder)."""
    out = tmp_path / "out"
    # About 100 s on 2 idle cores; the boxes are tripled (compile's excepted) so that a busy machine passes too.
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu" / "run.sh"), str(out), "--cpu-smoke", "--box-scale", "3"],
        env={**_env(), "BENCH_BUDGET_S": "360"},
        capture_output=True,
        text=True,
        timeout=480,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert {"results.md", "results.json", "log.txt", "pipeline-none.md", "pipeline-none.json"} <= set(files)
    assert len(files) <= 8 and all((out / f).is_file() for f in files)
    report = json.loads((out / "results.json").read_text())
    assert report["mode"] == "cpu-smoke" and report["environment"]["torch"]
    parts = {p["name"]: p for p in report["parts"]}
    assert parts["tiny"]["status"] == "done" and parts["pipeline-none"]["status"] == "done"
    # torch.compile on 2 cores rarely fits its 6 s box; when earlier parts ran long, it is skipped outright.
    assert parts["tiny-compile"]["status"] == "done" or parts["tiny-compile"]["status"].startswith(
        ("timed out", "skipped")
    )
    rows = {(r["variant"], r["batch"]): r for r in report["rows"]}
    for batch in (1, 2):
        base = rows[("baseline", batch)]
        assert base["images_per_s"] > 0 and base["speedup"] == 1.0 and 0 < base["roofline"] < 2
        assert rows[("torch-fp16", batch)]["engine_id"] == "torch-fp32-cpu"
        for variant in ("torch-bf16", "torch-fp8"):
            assert rows[(variant, batch)]["note"] == "skipped: needs CUDA"
        compiled = rows[("torch-compile", batch)]
        assert compiled.get("images_per_s") or compiled["note"].startswith(("timed out", "skipped"))
    pipeline = report["pipelines"]["pipeline-none"]["pipelines"][0]
    assert 0.1 < pipeline["ratio"] < 4.0  # run beside other tests: see test_pipeline_bench_small
    table = (out / "results.md").read_text()
    assert "| tiny | 64² | 3 | baseline |" in table and "goal met?" in table and "MLPerf" in table
    assert "## Pipeline vs engine (pipeline-none)" in table


@pytest.mark.e2e
@pytest.mark.minute(2)
def test_pipeline_bench_small(tmp_path: Path, tiny_model: Path) -> None:
    """bench/pipeline.py in a small form: a real worker makes 16 images; both rates, the ratio and the per-batch
    breakdown are in the JSON, and the breakdown adds up to the measured cycle. It finds the run's tiny model in
    its work dir, so it skips building one (the GPU runner's smoke test above builds its own)."""
    (tmp_path / "work" / "models").mkdir(parents=True)
    (tmp_path / "work" / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "pipeline.py"),
            *"--items 16 --size 64 --steps 2 --variants none --engine-batches 2 --repeats 1".split(),
            "--out",
            str(tmp_path / "out"),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=420,  # ~130 s in a whole run on 2 cores; beyond 240 s when other sessions share the machine
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert report["engine_images_per_s"] > 0 and len(report["engine"]) == 2
    (run,) = report["pipelines"]
    assert run["succeeded"] == 16 and run["failed"] == 0 and run["chunks"] == 4
    assert run["engine_ids"] == [report["engine"][0]["engine_id"]] == ["torch-fp32-cpu"]
    # The suite runs this beside other tests, so the engine-alone and pipeline phases can see different loads: the
    # bound catches a broken measurement (a rate off by an order of magnitude), not a slow one; figures are the
    # bench's job (docs/benchmarks.md).
    assert run["steady_images_per_s"] > 0 and 0.1 < run["ratio"] < 4.0
    parts = run["breakdown_ms_per_batch"]
    assert abs(parts["engine_alone"] + parts["generation_slowdown"] + parts["between_batches"] - parts["cycle"]) < 1e-6
    assert {"generate", "encode", "store", "cycle"} <= set(run["per_chunk_s"])
    assert "| pipeline, checker none (steady) |" in (tmp_path / "out" / "pipeline.md").read_text()
