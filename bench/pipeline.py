#!/usr/bin/env python3
"""Pipeline-vs-engine benchmark: images/s of the whole worker (claim → generate → judge → encode → store →
record, through Celery and the embedded Redis, SQLite and local storage) against the engine alone, on the tiny
model, and where the difference goes.

    python bench/pipeline.py                          # CPU: tiny model, 128², 10 steps, batch 4, 64 items
    python bench/pipeline.py --device cuda --items 256
    python bench/pipeline.py --items 16 --size 64 --steps 4 --variants none   # the test's small form

Fairness (steady state on both sides, model load and warm-up excluded):
- engine alone: ``load_engine`` + ``Engine.generate`` in this process, ``--warmup-batches`` untimed, then
  ``--repeats`` runs of ``--engine-batches`` batches; images/s per run, median over runs. It is measured before
  and after the pipeline runs (same prompts template, same thread count), so drift on a shared machine shows.
- pipeline: a real ``pixelmill worker`` subprocess on a fresh data dir; a warm-up job of two batches loads the
  model in the worker's child, then the measured job of ``--items`` items. Its rate comes from the ledger:
  ``steady`` = items after the first chunk / (last finished_at − first chunk's finished_at), i.e. finish to
  finish, so neither the first claim nor the model load counts; ``span`` (first started_at → last finished_at)
  is reported too.
- Progress is polled by reading the SQLite ledger directly (read-only, cheap, every 0.2 s); ``pixelmill status
  --json`` runs once at the end. A CLI call per poll would cost about a CPU-second of imports, stolen from the
  worker on a 2-core machine.

Breakdown per chunk (one chunk = one batch here; chunks are the items claimed in one transaction, i.e. sharing
``started_at``): ``cycle`` = claim-to-claim interval (the period of the worker's main thread), ``generate`` =
the engine's own ``timings.total`` inside the worker, ``slowdown`` = generate in the worker − generate alone
(contention from the judge and upload threads, which run beside generation), ``between batches`` = cycle −
generate, split with Celery's own task runtimes (``Task … succeeded in Ns`` in the worker's INFO log) into the
part inside the task (job lookup, engine lookup, claim, lease renewal, waiting for an upload slot) and the part
between tasks (Celery: ack, fetch and decode of the next message); and the off-thread stages from
``images.timings``: judge (per batch), encode and store (per image, summed per batch).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "studio photo of {title}, {color}, {material}, white background"
NEGATIVE = "blurry, text, watermark"
TITLES = [
    "ceramic mug",
    "leather wallet",
    "running shoe",
    "desk lamp",
    "water bottle",
    "wool scarf",
    "wooden bowl",
    "canvas backpack",
]
COLORS = ["cream white", "matte black", "forest green", "navy blue", "terracotta", "silver"]
MATERIALS = ["stoneware", "leather", "steel", "walnut", "cotton", "glass"]
TERMINAL = ("succeeded", "blocked", "failed")


def child_env(args: argparse.Namespace, data: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every pixelmill subprocess: this checkout first, a given data dir, the bench's batch size,
    the same thread count as the in-process engine, and CUDA hidden for ``--device cpu``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PIXELMILL_DATA_DIR": str(data),
        "PIXELMILL_BATCH_SIZE": str(args.batch),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(args.threads),
        **(extra or {}),
    }
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def pixelmill(env: dict[str, str], *cli: str, timeout: float = 300) -> str:
    """Run the `pixelmill` CLI as a user would; return stdout, raise with its stderr on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", "pixelmill", *cli], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pixelmill {' '.join(cli)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def write_catalogue(path: Path, count: int, tag: str) -> Path:
    """A catalogue of ``count`` distinct products (the tag keeps jobs from deduplicating against each other)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "color", "material"])
        for i in range(count):
            writer.writerow(
                [
                    f"{tag}-{i:05d}",
                    f"{TITLES[i % len(TITLES)]} {tag} {i}",
                    COLORS[i % len(COLORS)],
                    MATERIALS[(i // 3) % len(MATERIALS)],
                ]
            )
    return path


def prompts(count: int, tag: str) -> list[str]:
    """The same prompts the catalogue produces, for the engine-alone side."""
    return [
        TEMPLATE.format(
            title=f"{TITLES[i % len(TITLES)]} {tag} {i}",
            color=COLORS[i % len(COLORS)],
            material=MATERIALS[(i // 3) % len(MATERIALS)],
        )
        for i in range(count)
    ]


# ---------------------------------------------------------------------------------------------------------
# Engine alone


def measure_engine(model: str, args: argparse.Namespace, phase: str) -> dict[str, Any]:
    """Images/s of ``load_engine`` + ``generate`` in this process, load and warm-up excluded, median of repeats."""
    from worker.engine import Request, load_engine

    started = time.perf_counter()
    engine = load_engine(model)  # cached per process: the second phase reuses the loaded engine
    load_s = time.perf_counter() - started
    batch = args.batch

    def request(i: int) -> Request:
        texts = prompts(batch, f"{phase}{i}")
        return Request(
            prompts=texts,
            negatives=[NEGATIVE] * batch,
            seeds=[1000 * i + j for j in range(batch)],
            width=args.size,
            height=args.size,
            steps=args.steps,
            guidance=args.guidance,
        )

    for i in range(args.warmup_batches):
        engine.generate(request(i))
    rates, totals = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.engine_batches):
            totals.append(engine.generate(request(100 + r * args.engine_batches + i)).timings["total"])
        rates.append(batch * args.engine_batches / (time.perf_counter() - t0))
    return {
        "phase": phase,
        "engine_id": engine.engine_id,
        "load_s": round(load_s, 3),
        "images_per_s_runs": [round(x, 4) for x in rates],
        "images_per_s": statistics.median(rates),
        "generate_s_per_batch": statistics.median(totals),
    }


# ---------------------------------------------------------------------------------------------------------
# Whole pipeline


def poll_job(db: Path, job: int, total: int, timeout: float, worker: subprocess.Popen[bytes]) -> None:
    """Wait until every item of ``job`` is terminal, reading the SQLite ledger read-only five times a second
    (a read costs well under a millisecond; a coarser poll only adds to the bench's wall time)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            done = conn.execute(
                f"SELECT count(*) FROM items WHERE job_id = ? AND state IN {TERMINAL}", (job,)
            ).fetchone()[0]
        if done >= total:
            return
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode} before job {job} finished")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job}: {done}/{total} items done after {timeout:.0f} s")
        time.sleep(0.2)


def submit(env: dict[str, str], model: str, catalogue: Path, args: argparse.Namespace, name: str) -> int:
    result = json.loads(
        pixelmill(
            env,
            "submit",
            str(catalogue),
            "--template",
            TEMPLATE,
            "--negative",
            NEGATIVE,
            "--key",
            "sku",
            "--size",
            f"{args.size}x{args.size}",
            "--steps",
            str(args.steps),
            "--guidance",
            str(args.guidance),
            "--model",
            model,
            "--name",
            name,
            "--json",
        )
    )
    return int(result["job"])


def measure_pipeline(
    variant: str, model: str, judges: dict[str, str], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One real worker on a fresh data dir: warm-up job, then the measured job; figures from the ledger."""
    data = work / f"data-{variant}"
    data.mkdir(parents=True, exist_ok=True)
    # "none" measures the pipeline without image checks: the bench's worker is told to allow unchecked jobs
    # (production workers refuse them unless the operator says so, docs/safety.md, "Content safety").
    checks = (
        {"PIXELMILL_IMAGE_CHECKER": "none", "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true"}
        if variant == "none"
        else judges
    )
    env = child_env(args, data, checks)
    log_path = data / "worker.log"
    started = time.perf_counter()
    with open(log_path, "ab") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pixelmill", "worker", "--model", model, "--loglevel", "INFO"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    try:
        warm = submit(
            env, model, write_catalogue(work / f"warm-{variant}.csv", 2 * args.batch, f"w{variant}"), args, "warm-up"
        )
        poll_job(data / "pixelmill.db", warm, 2 * args.batch, args.timeout, worker)
        ready_s = time.perf_counter() - started
        t0 = time.perf_counter()
        job = submit(
            env, model, write_catalogue(work / f"items-{variant}.csv", args.items, f"m{variant}"), args, "bench"
        )
        poll_job(data / "pixelmill.db", job, args.items, args.timeout, worker)
        wall_s = time.perf_counter() - t0
        status = json.loads(pixelmill(env, "status", str(job), "--json"))
    except Exception:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        stop(worker)
        try:
            pixelmill(env, "broker", "stop", timeout=60)
        except Exception as exc:  # the bench's figures are in; a stuck broker is not worth losing them over
            print(f"warning: broker stop failed: {exc}", file=sys.stderr)
    if status.get("succeeded") != args.items:  # a rate of failed items would be no figure at all
        raise RuntimeError(f"the bench job did not succeed whole: {status}; see {log_path}")
    stats = ledger_stats(data / "pixelmill.db", job)
    tasks = task_runtimes(log_path)[-stats["chunks"] :]  # the measured job's tasks come after the warm-up's
    if len(tasks) == stats["chunks"]:
        stats["per_chunk_s"]["task"] = statistics.median(tasks)
        if len(stats["generate_series_s"]) == len(tasks):
            stats["per_chunk_s"]["in_task"] = statistics.median(
                t - g for t, g in zip(tasks, stats["generate_series_s"], strict=True)
            )
    return {
        "variant": variant,
        "job": job,
        "items": args.items,
        "worker_ready_s": round(ready_s, 2),
        "wall_s": round(wall_s, 2),
        "wall_images_per_s": args.items / wall_s,
        "status_images_per_s": status.get("images_per_s"),
        "succeeded": status.get("succeeded"),
        "failed": status.get("failed"),
        "blocked": status.get("blocked"),
        **stats,
    }


def stop(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown of the worker's process group, then SIGKILL if it hangs."""
    from pixelmill.cli.demo import stop_worker

    stop_worker(worker, timeout=20)


def task_runtimes(log: Path) -> list[float]:
    """Seconds of each Celery task (one chunk: lookup, claim, generate, hand-off to the upload threads), from
    Celery's own `Task … succeeded in Ns` lines; empty if the log does not have them."""
    pattern = re.compile(r"Task \S+ succeeded in ([0-9.]+)s")
    return [float(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))]


def parse_time(value: str) -> float:
    """SQLite stores the ledger's UTC timestamps as naive ISO text."""
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def ledger_stats(db: Path, job: int) -> dict[str, Any]:
    """Rates and the per-chunk breakdown of one finished job, from items and images.timings."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT i.started_at, i.finished_at, i.state, im.timings FROM items i "
            "LEFT JOIN images im ON im.item_id = i.id WHERE i.job_id = ?",
            (job,),
        ).fetchall()
        engines = sorted(
            {
                e
                for (e,) in conn.execute(
                    "SELECT DISTINCT im.engine_id FROM images im JOIN items i ON im.item_id = i.id WHERE i.job_id = ?",
                    (job,),
                )
                if e
            }
        )
    chunks: dict[float, list[tuple[float, dict[str, Any]]]] = {}
    for started, finished, _state, timings in rows:
        if started is None or finished is None:
            continue
        chunks.setdefault(parse_time(started), []).append((parse_time(finished), json.loads(timings or "{}")))
    starts = sorted(chunks)
    if len(starts) < 3:
        raise RuntimeError(f"job {job}: {len(starts)} chunks recorded; need at least 3 for a steady-state rate")
    finishes = sorted(max(f for f, _ in chunks[s]) for s in starts)
    first = chunks[starts[0]]
    steady = (len(rows) - len(first)) / (finishes[-1] - finishes[0])
    span = len(rows) / (finishes[-1] - starts[0])
    per_chunk: dict[str, list[float]] = {
        k: []
        for k in (
            "cycle",
            "generate",
            "text",
            "denoise",
            "decode",
            "judge",
            "encode",
            "store",
            "recorded_after_generate",
            "between",
        )
    }
    generated: list[float] = []  # per chunk, in claim order (aligned with Celery's task runtimes)
    for k, s in enumerate(starts):
        items = chunks[s]
        timings = [t for _, t in items if t]
        if k + 1 < len(starts):
            per_chunk["cycle"].append(starts[k + 1] - s)
        if not timings:
            continue
        first_t = timings[0]
        for key in ("text", "denoise", "decode", "judge"):
            if key in first_t:
                per_chunk[key].append(first_t[key])
        per_chunk["generate"].append(first_t.get("total", 0.0))
        generated.append(first_t.get("total", 0.0))
        if k + 1 < len(starts):  # per chunk, so that load drifting over the run cancels out
            per_chunk["between"].append(starts[k + 1] - s - first_t.get("total", 0.0))
        for key in ("encode", "store"):
            per_chunk[key].append(sum(t.get(key, 0.0) for t in timings))
        per_chunk["recorded_after_generate"].append(max(f for f, _ in items) - s - first_t.get("total", 0.0))
    medians = {k: statistics.median(v) for k, v in per_chunk.items() if v}
    return {
        "engine_ids": engines,
        "chunks": len(starts),
        "steady_images_per_s": steady,
        "span_images_per_s": span,
        "claim_images_per_s": (len(rows) - len(chunks[starts[-1]])) / (starts[-1] - starts[0]),
        "per_chunk_s": medians,
        "generate_series_s": generated,
    }


# ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the models, measure the engine, each pipeline variant, the engine again; derive ratio and breakdown."""
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pixelmill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    env = child_env(args, work / "data-setup")
    model = models / "tiny"
    if not (model / "model_index.json").exists():
        pixelmill(env, "model", "tiny", str(model))
    judges: dict[str, str] = {}
    if "judges" in args.variants:
        path = models / "tiny-judges"
        if not (path / "checker").exists():
            pixelmill(env, "model", "tiny-judges", str(path))
        judges = {
            "PIXELMILL_IMAGE_CHECKER": str(path / "checker"),
            "PIXELMILL_CLIP_MODEL": str(path / "clip"),
            "PIXELMILL_AESTHETIC_HEAD": str(path / "aesthetic.safetensors"),
        }
    # The in-process engine reads the same settings a worker would (load_engine -> get_settings()).
    os.environ.update(
        {
            k: v
            for k, v in child_env(args, work / "data-engine").items()
            if k.startswith(("PIXELMILL_", "CUDA_VISIBLE", "OMP_"))
        }
    )
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    # Engine phases bracket every pipeline run: each ratio is against the engine measured just before and just
    # after it, so load from other processes on a shared machine moves both sides of a ratio alike.
    engine = [measure_engine(str(model), args, "e0")]
    pipelines = []
    for k, variant in enumerate(args.variants):
        pipelines.append(measure_pipeline(variant, str(model), judges, work, args))
        engine.append(measure_engine(str(model), args, f"e{k + 1}"))
    engine_rate = statistics.median([x for e in engine for x in e["images_per_s_runs"]])
    engine_gen = statistics.median([e["generate_s_per_batch"] for e in engine])
    for k, p in enumerate(pipelines):
        around = engine[k : k + 2]
        p["engine_images_per_s"] = statistics.median([x for e in around for x in e["images_per_s_runs"]])
        p["ratio"] = p["steady_images_per_s"] / p["engine_images_per_s"]
        p["ratio_to_overall_engine"] = p["steady_images_per_s"] / engine_rate
        alone = statistics.median([e["generate_s_per_batch"] for e in around])
        c = p["per_chunk_s"]
        cycle = c.get("cycle", args.batch / p["steady_images_per_s"])
        gen = c.get("generate", alone)
        # Per batch: cycle = engine alone + (generate in worker - alone) + (cycle - generate in worker). The
        # between-batch part is a median of per-chunk differences (robust to load drifting during the run).
        between = c.get("between", cycle - gen)
        p["breakdown_ms_per_batch"] = {
            "engine_alone": 1000 * alone,
            "cycle": 1000 * cycle,
            "generation_slowdown": 1000 * (cycle - between - alone),
            "between_batches": 1000 * between,
        }
        if "in_task" in c:  # between batches = inside the task around generate + between tasks (Celery)
            p["breakdown_ms_per_batch"]["in_task_overhead"] = 1000 * c["in_task"]
            p["breakdown_ms_per_batch"]["between_tasks"] = 1000 * (between - c["in_task"])
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": describe(args.device),
        "torch": torch.__version__,
        "threads": args.threads,
        "command": " ".join(["bench/pipeline.py", *sys.argv[1:]])
        if args.argv is None
        else " ".join(["bench/pipeline.py", *args.argv]),
        "model": "tiny",
        "size": f"{args.size}x{args.size}",
        "steps": args.steps,
        "batch": args.batch,
        "items": args.items,
        "engine": engine,
        "engine_images_per_s": engine_rate,
        "engine_generate_s_per_batch": engine_gen,
        "pipelines": pipelines,
        "work_dir": str(work),
    }


def describe(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def markdown(report: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md: rates, ratio, and where each batch's time goes."""
    batch = report["batch"]
    lines = [
        f"Date {report['date']}; device {report['device']}; torch {report['torch']}; "
        f"{report['threads']} thread(s); tiny model {report['size']}, {report['steps']} steps, batch {batch}, "
        f"{report['items']} items per pipeline run.",
        f"Command: `{report['command']}`",
        "",
        "| measured | img/s | ratio to engine | note |",
        "|---|---|---|---|",
    ]
    runs = ", ".join(f"{e['phase']} {'/'.join(f'{x:.3g}' for x in e['images_per_s_runs'])}" for e in report["engine"])
    lines.append(
        f"| engine alone ({report['engine'][0]['engine_id']}) | {report['engine_images_per_s']:.3f} | 1.00 "
        f"| median of all runs: {runs} |"
    )
    for p in report["pipelines"]:
        engines = ", ".join(p.get("engine_ids", [])) or "-"
        lines.append(
            f"| pipeline, checker {p['variant']} (steady) | {p['steady_images_per_s']:.3f} "
            f"| **{p['ratio']:.3f}** | vs engine {p['engine_images_per_s']:.3f} img/s measured around it "
            f"({p['ratio_to_overall_engine']:.3f} vs all); worker's engine {engines}; {p['chunks']} chunks; "
            f"span {p['span_images_per_s']:.3f}, "
            f"claim-to-claim {p['claim_images_per_s']:.3f}, wall {p['wall_images_per_s']:.3f} img/s |"
        )
    lines += [
        "",
        f"Where a batch's time goes (ms per batch of {batch}, medians over chunks):",
        "",
        "| pipeline | engine alone | cycle in worker | generation slowdown | between batches "
        "(in task / between tasks) | generate (text/denoise/decode) | judge* | encode* | store* "
        "| recorded after generate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["pipelines"]:
        b, c = p["breakdown_ms_per_batch"], p["per_chunk_s"]

        def ms(key: str, c: dict[str, float] = c) -> str:
            return f"{1000 * c[key]:.1f}" if key in c else "-"

        split = f" ({b['in_task_overhead']:.1f} / {b['between_tasks']:.1f})" if "in_task_overhead" in b else ""
        lines.append(
            f"| checker {p['variant']} | {b['engine_alone']:.1f} | {b['cycle']:.1f} "
            f"| {b['generation_slowdown']:+.1f} | {b['between_batches']:.1f}{split} "
            f"| {ms('generate')} ({ms('text')}/{ms('denoise')}/{ms('decode')}) | {ms('judge')} "
            f"| {ms('encode')} | {ms('store')} | {ms('recorded_after_generate')} |"
        )
    lines += [
        "",
        "\\* off the main thread (judge thread, upload threads): they cost throughput only through CPU "
        "contention (the generation slowdown) or when the upload slots are full (between batches).",
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch", type=int, default=4, help="images per chunk (PIXELMILL_BATCH_SIZE)")
    parser.add_argument("--items", type=int, default=64, help="items in the measured job")
    parser.add_argument("--engine-batches", type=int, default=8, help="batches per engine-alone run")
    parser.add_argument("--repeats", type=int, default=2, help="engine-alone runs before and again after")
    parser.add_argument("--warmup-batches", type=int, default=1)
    parser.add_argument(
        "--variants",
        type=lambda s: s.split(","),
        default=["none", "judges"],
        help="image checks of the pipeline runs: none (PIXELMILL_IMAGE_CHECKER=none), judges "
        "(the tiny checker, CLIP and aesthetic models)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None,
        help="torch threads on both sides (default: OMP_NUM_THREADS, else all cores)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per job before giving up")
    parser.add_argument("--work-dir", default=None, help="models and data dirs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="writes PREFIX.json and PREFIX.md")
    parser.add_argument("--prefix", default="pipeline", help="file name stem of the results (default: pipeline)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.threads = args.threads or os.cpu_count() or 1
    if args.items < 3 * args.batch:
        parser.error("--items must cover at least 3 batches for a steady-state rate")
    unknown = set(args.variants) - {"none", "judges"}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: none, judges")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # A time-boxed caller ends us with SIGTERM: exit through the finally blocks, which stop the worker and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.prefix}.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / f"{args.prefix}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
