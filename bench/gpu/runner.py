#!/usr/bin/env python3
"""GPU benchmark runner: everything the H200 lease should measure, in priority order, each part in a time box, so
that whatever finishes comes back even if the lease or a part runs out.

    python bench/gpu/runner.py --out OUT --budget 450     # what bench/gpu/run.sh runs on the GPU machine
    python bench/gpu/runner.py --out OUT --cpu-smoke      # the same code paths on CPU, tiny configs, < 2 min

Parts (GPU): SDXL 1024² 20 steps and SD 1.5 512² 30 steps, batch 1/4/8, diffusers fp16 against the torch engine's
options (random weights from the published configs, built by bench/engine.py); the whole worker pipeline against
the engine alone (bench/pipeline.py); then torch.compile, whose warm-up is the most expensive and least certain,
with what time is left. Each model part runs in its own process (the GPU memory of one part never limits the
next, and a part over its time box is killed without losing the others); it appends one JSON line per measured
(variant, batch) and this process rewrites results.md and results.json after every part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Figures from /work/shared/anchors.md (MLPerf Inference SDXL, 1024², 20 steps, offline img/s per GPU) and our goals.
ANCHORS = {
    "sdxl": "MLPerf SDXL 20 steps: H200 2.37 img/s (NVIDIA, TensorRT FP8), H100 2.26 (TheStage, FP8 incl. attention)"
}
GOALS = {("sdxl", 1024, 20): 2.6, ("sd15", 512, 30): 20.0}
# Published-config FLOP counts (anchors.md: UNet per CFG step at batch 2, VAE decode), used only when a part could
# not count them itself: TFLOP per image = unet * steps + vae.
REFERENCE_TFLOP = {"sdxl": (13.52, 10.47), "sd15": (1.607, 2.51)}
REFERENCE_PEAK_TFLOPS = 788.0  # bf16 8192³ matmul measured on an H200 here (KINDS.md), when a part did not measure
ENGINE_VARIANTS = ["baseline", "torch-fp16", "torch-fp8", "torch-int8", "torch-bf16"]
TRT_NOTE = (
    "skipped: TensorRT cannot be installed on the GPU machine (its registry packages fetch from NVIDIA's "
    "index, unreachable there and here)"
)


@dataclass
class Part:
    """One time-boxed unit of work: a model comparison (run in a child process) or the pipeline bench."""

    name: str
    kind: str  # "engine" or "pipeline"
    box_s: float  # time box; the child is killed past it
    min_s: float = 20.0  # skipped when less than this is left of the whole budget
    scalable: bool = True  # --box-scale applies (not to compile, whose box is there to cut it short)
    model: str = ""
    size: int = 0
    steps: int = 0
    batches: list[int] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    warmup: int = 1
    repeats: int = 2
    pipeline_args: list[str] = field(default_factory=list)
    status: str = "pending"
    seconds: float = 0.0


def pipeline_args(
    device: str, items: int, size: int, steps: int, variants: str, *, batches: int, repeats: int, warmup: int
) -> list[str]:
    """bench/pipeline.py's command line for a part: `items` images at `size` px and `steps` steps."""
    shape = f"--device {device} --items {items} --size {size} --steps {steps} --variants {variants}"
    return [
        *shape.split(),
        "--engine-batches",
        str(batches),
        "--repeats",
        str(repeats),
        "--warmup-batches",
        str(warmup),
    ]


def compile_part(model: str, size: int, steps: int, batches: list[int], *, box_s: float, min_s: float) -> Part:
    """torch.compile of `model`: its box is there to cut the compile short, so --box-scale leaves it alone."""
    part = Part(f"{model}-compile", "engine", box_s, min_s, scalable=False, model=model, size=size, steps=steps)
    part.batches, part.variants = batches, ["torch-compile"]
    return part


def plan(cpu_smoke: bool) -> list[Part]:
    """The parts in priority order; the CPU smoke form keeps every code path with tiny shapes."""
    if cpu_smoke:
        return [
            Part("tiny", "engine", box_s=60, model="tiny", size=64, steps=3, batches=[1, 2], variants=ENGINE_VARIANTS),
            Part(
                "pipeline-none",
                "pipeline",
                box_s=75,
                pipeline_args=pipeline_args("cpu", 12, 64, 2, "none", batches=1, repeats=1, warmup=1),
            ),
            # Deliberately short: on 2 CPU cores inductor's compile usually overruns it, which exercises the kill.
            compile_part("tiny", 64, 3, [1, 2], box_s=6, min_s=5),
        ]
    return [
        Part(
            "sdxl", "engine", box_s=200, model="sdxl", size=1024, steps=20, batches=[1, 4, 8], variants=ENGINE_VARIANTS
        ),
        Part(
            "sd15",
            "engine",
            box_s=90,
            model="sd15",
            size=512,
            steps=30,
            batches=[1, 4, 8],
            variants=ENGINE_VARIANTS,
            repeats=3,
        ),
        Part(
            "pipeline-none",
            "pipeline",
            box_s=60,
            pipeline_args=pipeline_args("cuda", 256, 128, 10, "none", batches=16, repeats=2, warmup=2),
        ),
        compile_part("sd15", 512, 30, [1, 4, 8], box_s=75, min_s=40),
        Part(
            "pipeline-judges",
            "pipeline",
            box_s=45,
            min_s=40,
            pipeline_args=pipeline_args("cuda", 256, 128, 10, "judges", batches=16, repeats=2, warmup=2),
        ),
        compile_part("sdxl", 1024, 20, [1, 4, 8], box_s=120, min_s=60),
    ]


# ---------------------------------------------------------------------------------------------------------
# Child: one model part


def child(spec: dict[str, Any]) -> int:
    """Measure every (variant, batch) of one model part, appending a JSON line per result to spec["rows"].

    Before each batch it estimates the time from the previous one and writes a 'skipped' row instead of starting
    work that would overrun the box; a variant that fails records its error and the next one still runs.
    """
    sys.path.insert(0, str(ROOT / "bench"))
    import engine as eb  # bench/engine.py: pipelines from the published configs, variants, timing, FLOP counts
    import torch

    from worker.engine import Request

    device, deadline, model = spec["device"], spec["deadline"], spec["model"]
    out = open(spec["rows"], "a", buffering=1)

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")

    cuda = device == "cuda"
    half = torch.float16 if cuda else torch.float32
    emit({"kind": "env", **environment(torch, device)})
    if spec["measure_peak"]:
        emit({"kind": "peak", "tflops": eb.matmul_rate(device, half) / 1e12, "dtype": str(half).split(".")[-1]})
    args = argparse.Namespace(models_dir=None, engine_cache=None)

    def request(batch: int, steps: int | None = None) -> Request:
        return eb.square_request([f"{eb.PROMPT} {i}" for i in range(batch)], spec["size"], steps or spec["steps"], 7.5)

    pipe: Any = None
    generate: Any = None
    for variant in spec["variants"]:
        base = {"kind": "row", "model": model, "size": spec["size"], "steps": spec["steps"], "variant": variant}
        built = time.monotonic()
        try:
            if variant == "baseline":
                pipe = eb.build_pipeline(model, device, half)
                engine_id = f"diffusers-{'fp16' if cuda else 'fp32'}-{device}"

                def generate(r: Request, p: Any = pipe) -> Any:
                    return eb.run_baseline(p, r, device)

                if spec["count_flops"]:
                    with torch.inference_mode():
                        flops = eb.count_flops(pipe, request(1), spec["steps"], device)
                    emit({"kind": "flops", "model": model, "tflop_per_image": flops / 1e12})
            else:
                engine_id, generate = eb.variant_runner(variant, model, device, args)
        except eb.Unavailable as exc:
            for batch in spec["batches"]:
                emit({**base, "batch": batch, "note": f"skipped: {exc}"})
            continue
        except Exception as exc:  # a path never run on this GPU may fail: record it, go on
            for batch in spec["batches"]:
                emit({**base, "batch": batch, "note": f"error building: {type(exc).__name__}: {str(exc)[:160]}"})
            continue
        build_s = time.monotonic() - built
        per_image_s: float | None = None
        for batch in spec["batches"]:
            row = {**base, "batch": batch, "engine_id": engine_id, "build_s": round(build_s, 1)}
            calls = spec["warmup"] + spec["repeats"]
            if per_image_s is not None and time.time() + per_image_s * batch * calls > deadline - 2:
                emit({**row, "note": "skipped: would overrun the part's time box"})
                continue
            try:
                call = functools.partial(generate, request(batch))
                with torch.inference_mode():
                    started = time.monotonic()
                    warm = eb.time_call(call, device, 0, spec["warmup"])
                    times = eb.time_call(call, device, 0, spec["repeats"])
            except torch.OutOfMemoryError:
                emit({**row, "note": "out of memory"})
                if cuda:
                    torch.cuda.empty_cache()
                continue
            except Exception as exc:
                emit({**row, "note": f"error: {type(exc).__name__}: {str(exc)[:160]}"})
                continue
            ms = statistics.median(times)
            per_image_s = ms / 1000 / batch
            emit(
                {
                    **row,
                    "ms_per_image": ms / batch,
                    "images_per_s": 1000 * batch / ms,
                    "runs_ms": [round(t, 2) for t in times],
                    "warmup_s": round(sum(warm) / 1000, 2),
                    "first_batch_s": round(time.monotonic() - started, 1),
                }
            )
        pipe = generate = None  # drop the variant's pipeline before the next one is built
        if cuda:
            torch.cuda.empty_cache()
    out.close()
    return 0


def environment(torch: Any, device: str) -> dict[str, Any]:
    """What the results depend on: GPU, driver-side CUDA, library versions, date."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for name in ("diffusers", "transformers", "torchao", "celery", "huggingface-hub"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        **versions,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    else:
        info["gpu"] = f"none (CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return info


# ---------------------------------------------------------------------------------------------------------
# Parent


class Runner:
    """Runs the parts within the budget and rewrites the results after each one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.device = "cpu" if args.cpu_smoke else "cuda"
        self.deadline = time.time() + args.budget
        self.parts = [p for p in plan(args.cpu_smoke) if not args.parts or p.name in args.parts]
        for part in self.parts:
            if part.scalable:
                part.box_s, part.min_s = part.box_s * args.box_scale, part.min_s * args.box_scale
        self.work = Path(tempfile.mkdtemp(prefix="pixelmill-gpubench-"))
        self.log = open(self.out / "log.txt", "a", buffering=1)
        self.records: list[dict[str, Any]] = []
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.smi = nvidia_smi()
        self.started = time.time()

    def say(self, message: str) -> None:
        line = f"[{time.time() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self) -> int:
        self.say(f"budget {self.args.budget:.0f} s, parts: {', '.join(p.name for p in self.parts)}")
        for part in self.parts:
            left = self.deadline - time.time()
            if left < part.min_s:
                part.status = f"skipped: {left:.0f} s left of the budget, part needs at least {part.min_s:.0f} s"
                self.say(f"{part.name}: {part.status}")
                self.write()
                continue
            # A part run on its own (--parts NAME, e.g. a second lease for compile) gets the whole budget.
            box = left if len(self.parts) == 1 else min(part.box_s, left)
            started = time.time()
            part.status = self.run_engine(part, box) if part.kind == "engine" else self.run_pipeline(part, box)
            part.seconds = time.time() - started
            self.say(f"{part.name}: {part.status} ({part.seconds:.0f} s)")
            self.write()
        shutil.rmtree(self.work, ignore_errors=True)
        print((self.out / "results.md").read_text())
        return 0

    def spawn(self, command: list[str], box: float) -> tuple[str, int | None]:
        """Run a part's process in its own session; kill the whole group past the box."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        }
        proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=box)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # a pipeline part then stops its worker and Redis
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.reap(proc.pid)
            return f"timed out: time box {box:.0f} s", None
        self.reap(proc.pid)
        return ("done" if code == 0 else f"failed: exit code {code} (see log.txt)"), code

    @staticmethod
    def reap(pgid: int) -> None:
        """A part's leftovers (a pipeline's worker or Redis) must not run into the next part."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def run_engine(self, part: Part, box: float) -> str:
        rows = self.work / f"{part.name}.jsonl"
        spec = {
            "device": self.device,
            "deadline": time.time() + box,
            "model": part.model,
            "size": part.size,
            "steps": part.steps,
            "batches": part.batches,
            "variants": part.variants,
            "warmup": part.warmup,
            "repeats": part.repeats,
            "rows": str(rows),
            "measure_peak": not any(r["kind"] == "peak" for r in self.records),
            "count_flops": "baseline" in part.variants,
        }
        status, _ = self.spawn([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], box)
        got = [json.loads(line) for line in rows.read_text().splitlines()] if rows.exists() else []
        done = {(r["variant"], r["batch"]) for r in got if r["kind"] == "row"}
        for variant in part.variants:
            for batch in part.batches:
                if (variant, batch) not in done:
                    note = status if status != "done" else "not measured"
                    got.append(
                        {
                            "kind": "row",
                            "model": part.model,
                            "size": part.size,
                            "steps": part.steps,
                            "variant": variant,
                            "batch": batch,
                            "note": note,
                        }
                    )
        for r in got:
            r["part"] = part.name
        self.records += got
        return status

    def run_pipeline(self, part: Part, box: float) -> str:
        prefix = part.name
        command = [
            sys.executable,
            str(ROOT / "bench" / "pipeline.py"),
            *part.pipeline_args,
            "--out",
            str(self.out),
            "--prefix",
            prefix,
            "--work-dir",
            str(self.work / prefix),
            "--timeout",
            f"{box:.0f}",
        ]
        status, _ = self.spawn(command, box)
        path = self.out / f"{prefix}.json"
        if path.exists():
            self.pipelines[part.name] = json.loads(path.read_text())
        return status

    # ---- results

    def rows(self) -> list[dict[str, Any]]:
        """Measured and unmeasured rows with speed-up, FLOPs, roofline and goal columns filled in."""
        peaks = [r for r in self.records if r["kind"] == "peak"]
        peak = peaks[0]["tflops"] if peaks else (None if self.args.cpu_smoke else REFERENCE_PEAK_TFLOPS)
        flops = {r["model"]: r["tflop_per_image"] for r in self.records if r["kind"] == "flops"}
        rows = [dict(r) for r in self.records if r["kind"] == "row"]
        baseline = {
            (r["model"], r["batch"]): r["ms_per_image"]
            for r in rows
            if r["variant"] == "baseline" and r.get("ms_per_image")
        }
        for r in rows:
            ms = r.get("ms_per_image")
            tflop = flops.get(r["model"])
            r["flops_source"] = "counted" if tflop else None
            if tflop is None and r["model"] in REFERENCE_TFLOP:
                unet, vae = REFERENCE_TFLOP[r["model"]]
                tflop, r["flops_source"] = unet * r["steps"] + vae, "anchors.md"
            r["tflop_per_image"] = tflop
            if ms:
                if (r["model"], r["batch"]) in baseline:
                    r["speedup"] = baseline[(r["model"], r["batch"])] / ms
                if tflop and peak:
                    r["roofline"] = tflop / (ms / 1000) / peak
                goal = GOALS.get((r["model"], r["size"], r["steps"]))
                if goal is not None:
                    r["goal_met"] = r["images_per_s"] >= goal
        order = {p.name: i for i, p in enumerate(self.parts)}
        variants = {v: i for i, v in enumerate([*ENGINE_VARIANTS, "torch-compile"])}
        rows.sort(
            key=lambda r: (
                r["model"] != "sdxl",
                r["model"],
                order.get(r["part"], 0),
                variants.get(r["variant"], 99),
                r["batch"],
            )
        )
        if not self.args.cpu_smoke:
            for model, size, steps in (("sdxl", 1024, 20), ("sd15", 512, 30)):
                rows += [
                    {
                        "model": model,
                        "size": size,
                        "steps": steps,
                        "variant": v,
                        "batch": b,
                        "note": TRT_NOTE,
                        "part": "-",
                    }
                    for v in ("trt-fp8",)
                    for b in (1,)
                ]
        return rows

    def environment(self) -> dict[str, Any]:
        envs = [r for r in self.records if r["kind"] == "env"]
        env: dict[str, Any] = dict(envs[0]) if envs else {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        env.pop("kind", None)
        if self.smi:
            env["nvidia_smi"] = self.smi
        peaks = [r for r in self.records if r["kind"] == "peak"]
        env["matmul_tflops"] = peaks[0]["tflops"] if peaks else None
        env["matmul_dtype"] = peaks[0]["dtype"] if peaks else None
        return env

    def write(self) -> None:
        report = {
            "mode": "cpu-smoke" if self.args.cpu_smoke else "gpu",
            "budget_s": self.args.budget,
            "elapsed_s": round(time.time() - self.started, 1),
            "environment": self.environment(),
            "parts": [
                {"name": p.name, "status": p.status, "seconds": round(p.seconds, 1), "box_s": p.box_s}
                for p in self.parts
            ],
            "rows": self.rows(),
            "pipelines": self.pipelines,
            "goals": {f"{m} {s}² {n} steps": g for (m, s, n), g in GOALS.items()},
            "anchors": ANCHORS,
        }
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(self.out / "results.json")
        (self.out / "results.md").write_text(markdown(report))


def nvidia_smi() -> str | None:
    """GPU name, driver, memory and clocks as the card reports them (read only; settings are never changed)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def markdown(report: dict[str, Any]) -> str:
    """results.md: environment, part statuses, the comparison table, goals and anchors, the pipeline ratio."""

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    env = report["environment"]
    lines = [
        f"# pixelmill GPU benchmark ({report['mode']})",
        "",
        f"Date {env.get('date')}; GPU {env.get('gpu')}"
        + (f" (compute {env['capability']})" if env.get("capability") else "")
        + "; "
        f"torch {env.get('torch')}, CUDA {env.get('cuda')}; Python {env.get('python')}; diffusers "
        f"{env.get('diffusers')}, transformers {env.get('transformers')}, torchao {env.get('torchao')}.",
        f"nvidia-smi: {env.get('nvidia_smi') or '-'}. Measured {env.get('matmul_dtype') or '-'} matmul "
        f"{fmt(env.get('matmul_tflops'), '.3g')} TFLOP/s (the roofline's ceiling; 8-bit variants can exceed "
        "1.0 only through 8-bit tensor cores).",
        f"Budget {report['budget_s']:.0f} s, elapsed {report['elapsed_s']:.0f} s. Random weights, published "
        "configs, CFG 7.5, Euler; timings are medians of whole text→denoise→decode calls after warm-up.",
        "",
        "| part | status | seconds | box s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p['name']} | {p['status']} | {p['seconds']:.0f} | {p['box_s']:.0f} |" for p in report["parts"]]
    lines += [
        "",
        "| model | size | steps | variant | engine id | batch | img/s | ms/img | speed-up | TFLOP/img "
        "| roofline | goal met? | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        goal = GOALS.get((r["model"], r["size"], r["steps"]))
        met = "-" if r.get("goal_met") is None else (f"yes (≥ {goal:g})" if r["goal_met"] else f"no (< {goal:g})")
        note = r.get("note", "")
        if r.get("warmup_s") is not None and r["variant"] == "torch-compile":
            note = f"compile warm-up {r['warmup_s']:.0f} s" + (f"; {note}" if note else "")
        if r.get("flops_source") == "anchors.md":
            note = "FLOPs from anchors.md" + (f"; {note}" if note else "")
        lines.append(
            f"| {r['model']} | {r['size']}² | {r['steps']} | {r['variant']} | {r.get('engine_id') or '-'} "
            f"| {r['batch']} | {fmt(r.get('images_per_s'), '.2f')} | {fmt(r.get('ms_per_image'), '.1f')} "
            f"| {fmt(r.get('speedup'), '.2f')} | {fmt(r.get('tflop_per_image'), '.3g')} "
            f"| {fmt(r.get('roofline'), '.1%')} | {met} | {note} |"
        )
    lines += ["", "Goals on an H200 and anchors:", ""]
    for (model, size, steps), goal in GOALS.items():
        measured = [
            r
            for r in report["rows"]
            if (r["model"], r["size"], r["steps"]) == (model, size, steps) and r.get("images_per_s")
        ]
        best = max(measured, key=lambda r: r["images_per_s"], default=None)
        got = (
            (
                f"best {best['images_per_s']:.2f} img/s ({best['variant']}, batch {best['batch']}): "
                f"{'met' if best['images_per_s'] >= goal else 'not met'}"
            )
            if best
            else "not measured"
        )
        anchor = f" {ANCHORS[model]}." if model in ANCHORS else ""
        lines.append(f"- {model} {size}² {steps} steps: goal ≥ {goal:g} img/s; {got}.{anchor}")
    for name, p in report["pipelines"].items():
        lines += ["", f"## Pipeline vs engine ({name})", "", pipeline_markdown(p)]
    return "\n".join(lines) + "\n"


def pipeline_markdown(report: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    import pipeline

    return pipeline.markdown(report)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="results.md, results.json, log.txt and pipeline-*.md/json go here")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all parts together (default: 450 on GPU, 120 with --cpu-smoke)",
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny configs on CPU: rehearse every code path")
    parser.add_argument(
        "--parts",
        type=lambda s: s.split(","),
        default=None,
        help="only these parts, e.g. sd15-compile for a second run with a longer budget",
    )
    parser.add_argument(
        "--box-scale",
        type=float,
        default=1.0,
        help="multiply the time boxes (not compile's): a slower or busier machine than planned for",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and args.out is None:
        parser.error("--out is required")
    if args.budget is None:
        args.budget = 120.0 if args.cpu_smoke else 450.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child is not None:
        return child(json.loads(args.child))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise SystemExit("torch is not importable: run on the GPU machine's python3, or use --cpu-smoke")
    return Runner(args).run()


if __name__ == "__main__":
    sys.exit(main())
