#!/usr/bin/env python3
"""What the worker's metrics cost per chunk, against what the chunk itself costs.

    python bench/metrics_cost.py                       # tiny model on CPU, 128², 10 steps, batch 4
    python bench/metrics_cost.py --size 64 --steps 2 --chunks 200 --repeats 3   # the test's small form

- metrics: the hooks a worker calls per chunk (`metrics.claimed` after the claim, `metrics.recorded` after the
  recording: outcome counters, 4 stage histograms, 3 score histograms and the latency histogram per image) in
  multiprocess mode (a PROMETHEUS_MULTIPROC_DIR, as a metrics-serving worker runs), with realistic timings and
  scores; ``--chunks`` chunks per run, median seconds per chunk over ``--repeats`` runs.
- chunk: the tiny model's ``Engine.generate`` of one batch in this process (warm-up excluded), median over the
  same number of runs. A real chunk also claims, judges, encodes, stores and records, so this denominator is the
  chunk's smallest part and the ratio an upper bound; a real model's batch takes seconds, not milliseconds.
- The /metrics endpoint's cost (reading the files and the ledger's gauges) is paid per scrape on the worker
  parent's own thread, not per chunk; it is reported separately (one scrape of the registry, median).

Prints a JSON report; ``--markdown`` prints the docs/benchmarks.md row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="image side, pixels")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps of the generation it is compared with")
    parser.add_argument("--batch", type=int, default=4, help="images per generated batch")
    parser.add_argument("--chunks", type=int, default=2000, help="chunks of metrics per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the median is reported")
    parser.add_argument("--model", default=None, help="a diffusers directory (default: the tiny model, built)")
    parser.add_argument("--markdown", action="store_true")
    return parser.parse_args(argv)


def metrics_per_chunk(args: argparse.Namespace, directory: Path) -> dict[str, float]:
    from contract import metrics

    metrics.enable_multiprocess(directory)
    now = datetime.now(UTC)
    created = [now - timedelta(seconds=30 + i) for i in range(args.batch)]
    timings = [
        {"total": 0.8, "batch": args.batch, "judge": 0.1, "encode": 0.02, "store": 0.01} for _ in range(args.batch)
    ]
    scores = [{"clip": 0.31, "aesthetic": 5.2, "sharpness": 0.6} for _ in range(args.batch)]
    outcomes = {"succeeded": args.batch, "blocked": 0, "retried": 0, "failed": 0}
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.chunks):
            metrics.claimed("bench-model", created, now)
            metrics.recorded("bench-model", "default", outcomes, timings, scores, created, now)
        runs.append((time.perf_counter() - started) / args.chunks)
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    scrapes = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        generate_latest(registry)
        scrapes.append(time.perf_counter() - started)
    return {"per_chunk_s": statistics.median(runs), "scrape_s": statistics.median(scrapes)}


def chunk_seconds(args: argparse.Namespace, model: str) -> float:
    from worker.engine import Request, load_engine

    engine = load_engine(model)

    def request(i: int) -> Request:
        return Request(
            prompts=[f"studio photo of mug {i}-{j}" for j in range(args.batch)],
            negatives=["blurry"] * args.batch,
            seeds=[i * 100 + j for j in range(args.batch)],
            width=args.size,
            height=args.size,
            steps=args.steps,
            guidance=7.0,
        )

    engine.generate(request(0))  # warm-up
    runs = []
    for r in range(args.repeats):
        started = time.perf_counter()
        engine.generate(request(r + 1))
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="pixelmill-bench-metrics-") as tmp:
        measured = metrics_per_chunk(args, Path(tmp) / "metrics")
        model = args.model
        if model is None:
            from worker.engine.tiny import build_tiny_pipeline

            model = str(build_tiny_pipeline(Path(tmp) / "tiny", seed=0))
        chunk = chunk_seconds(args, model)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "batch": args.batch,
        "size": args.size,
        "steps": args.steps,
        "metrics_per_chunk_us": round(measured["per_chunk_s"] * 1e6, 1),
        "generate_per_batch_ms": round(chunk * 1e3, 2),
        "ratio_percent": round(100 * measured["per_chunk_s"] / chunk, 3),
        "scrape_ms": round(measured["scrape_s"] * 1e3, 2),
    }
    if args.markdown:
        print(
            f"| {report['date']} | tiny, {args.size}², {args.steps} steps, batch {args.batch} | "
            f"{report['metrics_per_chunk_us']} µs | {report['generate_per_batch_ms']} ms | "
            f"{report['ratio_percent']} % | {report['scrape_ms']} ms |"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
