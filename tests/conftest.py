"""Fixtures that start the real things: the embedded Redis, the SQLite ledger, `pixelmill worker` processes.

Each test gets its own data dir (so its own broker and ledger), and short timings so recovery paths run in
seconds rather than the production minutes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelmill.broker import EmbeddedRedis
from pixelmill.db import Ledger
from pixelmill.settings import Settings

FAST_TIMINGS = {
    "PIXELMILL_TASK_SOFT_TIME_LIMIT": "20",
    "PIXELMILL_TASK_TIME_LIMIT": "30",
    "PIXELMILL_LEASE_SECONDS": "40",
    "PIXELMILL_VISIBILITY_TIMEOUT": "60",
    "PIXELMILL_RECONCILE_INTERVAL": "1",
    "PIXELMILL_REQUEUE_AFTER": "3",
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.engine.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny", seed=0)


class Env:
    """A pixelmill installation in one data dir: its environment, settings, CLI and workers."""

    def __init__(self, data_dir: Path, model: Path) -> None:
        self.data_dir = data_dir
        self.model = model
        self.vars = {**os.environ, **FAST_TIMINGS, "PIXELMILL_DATA_DIR": str(data_dir),
                     "PIXELMILL_MODEL": str(model), "PYTHONUNBUFFERED": "1"}
        self.workers: list[subprocess.Popen[bytes]] = []

    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("PIXELMILL_").lower(): v for k, v in FAST_TIMINGS.items()}
        return Settings(data_dir=self.data_dir, model=str(self.model), **{**values, **overrides})

    def ledger(self) -> Ledger:
        return Ledger(self.settings())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "pixelmill", *args], env=self.vars, text=True,
                              capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"pixelmill {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def submit(self, catalogue: Path, *args: str) -> dict[str, Any]:
        proc = self.cli("submit", str(catalogue), "--template", "studio photo of {title}, {color}",
                        "--key", "sku", "--size", "64x64", "--steps", "4", "--json", *args)
        return json.loads(proc.stdout)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"worker-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "pixelmill", "worker", "--loglevel", "INFO"],
                                env={**self.vars, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group: the main process and its prefork child."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=90)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.data_dir.glob("worker-*.log")))

    def wait_for(self, job: int, predicate: Callable[[dict[str, int]], bool], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        ledger = self.ledger()
        try:
            while True:
                counts = job_counts(ledger, job)
                if predicate(counts):
                    return counts
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job} stuck at {counts}; worker logs:\n{self.worker_logs()[-6000:]}")
                time.sleep(0.2)
        finally:
            ledger.close()

    def images(self) -> list[Path]:
        root = self.data_dir / "images"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill(proc, signal.SIGKILL)
        EmbeddedRedis(self.data_dir).stop()


def job_counts(ledger: Ledger, job: int) -> dict[str, int]:
    from producer.status import job_status

    with ledger.session() as session:
        status = job_status(session, job)
    return {k: v for k, v in status.as_dict().items() if isinstance(v, int) and not isinstance(v, bool)}


def finished(counts: dict[str, int]) -> bool:
    return counts["pending"] + counts["queued"] + counts["running"] == 0


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path) -> Iterator[Env]:
    installation = Env(tmp_path / "data", tiny_model)
    installation.data_dir.mkdir()
    yield installation
    installation.close()


def write_catalogue(path: Path, rows: int, *, start: int = 0) -> Path:
    colors = ["red", "navy", "sage green", "charcoal", "ivory", "mustard"]
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "title", "color"])
        for i in range(start, start + rows):
            out.writerow([f"SKU-{i:03d}", f"ceramic mug model {i}", colors[i % len(colors)]])
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
