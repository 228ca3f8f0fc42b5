"""`pixelmill worker --gpus`: one Celery worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES.

The supervisor never touches CUDA (discovery asks `nvidia-smi`), so nothing is initialised before the
children start. Each child is an ordinary `pixelmill worker` with a stable node name (`gpu<N>@host`), so a
restarted child reclaims the items its predecessor held. SIGTERM/SIGINT are forwarded to every child
(Celery's warm shutdown: finish the current batch, hand the rest back to the broker; a second signal is
forwarded too, which Celery takes as a cold shutdown); a child that dies otherwise is restarted, with a
growing delay if it keeps dying.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FAKE_GPUS_ENV = "PIXELMILL_FAKE_GPUS"  # tests and CPU hosts: pretend these GPU indices exist
RESTART_DELAY = (1.0, 60.0)  # first and longest delay before restarting a child that died
HEALTHY_AFTER = 60.0  # a child that ran this long restarts after the first delay again


class GpuError(ValueError):
    pass


def discover_gpus() -> list[str]:
    """GPU indices as CUDA numbers them with CUDA_DEVICE_ORDER=PCI_BUS_ID, without initialising CUDA."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        return [g.strip() for g in fake.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def select_gpus(spec: str, available: Sequence[str]) -> list[str]:
    """`all` or a comma list of indices, checked against what discovery found."""
    if spec.strip() == "all":
        if not available:
            raise GpuError("--gpus all: no GPU found (nvidia-smi missing or lists none)")
        return list(available)
    wanted = [g.strip() for g in spec.split(",")]
    if not all(g.isdigit() for g in wanted):
        raise GpuError(f"--gpus: expected 'all' or indices like 0,1,3, got {spec!r}")
    if len(set(wanted)) != len(wanted):
        raise GpuError(f"--gpus: {spec!r} lists a GPU twice")
    unknown = [g for g in wanted if g not in available]
    if unknown:
        raise GpuError(f"--gpus: no GPU {', '.join(unknown)} on this host (found: {', '.join(available) or 'none'})")
    return wanted


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed, instead of running on unsupervised."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    gpu: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY[0]
    restart_at: float = 0.0
    restarts: int = 0


@dataclass
class Supervisor:
    gpus: Sequence[str]
    command: Callable[[str], list[str]]  # the worker command line for one GPU
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(init=False)
    stopping: bool = field(init=False, default=False)
    stop_signal: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.children = [Child(gpu) for gpu in self.gpus]

    def _start(self, child: Child) -> None:
        env = {
            **self.env,
            "CUDA_VISIBLE_DEVICES": child.gpu,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "PIXELMILL_GPU": child.gpu,
        }
        # Share the CPU cores between the workers (torch would give each of them all of them, and OpenMP
        # threads spinning in several processes at once slow every one of them down); an explicit setting wins.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(self.children))))
        env.pop(FAKE_GPUS_ENV, None)
        # Its own session: a terminal's Ctrl-C reaches only the supervisor, which forwards it exactly once
        # (a second SIGINT would mean a cold shutdown to Celery).
        if self.stopping:
            return
        child.proc = subprocess.Popen(
            self.command(child.gpu), env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        child.started = time.monotonic()
        log.info("worker started", extra={"gpu": child.gpu, "pid": child.proc.pid, "restarts": child.restarts})
        if self.stopping and self.stop_signal is not None:  # the signal came while it was starting
            child.proc.send_signal(self.stop_signal)

    def _forward(self, signum: int, _frame: Any = None) -> None:
        self.stopping, self.stop_signal = True, signum
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)
        log.info("forwarded signal to workers", extra={"signal": signal.Signals(signum).name})

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self._forward)
        for child in self.children:
            self._start(child)
        while True:
            now = time.monotonic()
            alive = 0
            for child in self.children:
                if child.proc is not None and child.proc.poll() is None:
                    alive += 1
                    continue
                if self.stopping:
                    continue
                if child.proc is not None:  # it died on its own: restart it after a delay
                    code = child.proc.returncode
                    if now - child.started > HEALTHY_AFTER:
                        child.delay = RESTART_DELAY[0]
                    child.restart_at, child.proc = now + child.delay, None
                    log.warning(
                        "worker exited; restarting", extra={"gpu": child.gpu, "code": code, "delay_s": child.delay}
                    )
                    child.delay = min(child.delay * 2, RESTART_DELAY[1])
                    alive += 1
                elif now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                    alive += 1
                else:
                    alive += 1
            if self.stopping and alive == 0:
                log.info("all workers stopped")
                return 0
            time.sleep(0.2)


def worker_command(gpu: str, *, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "pixelmill", "worker", "--hostname", f"gpu{gpu}@%h", "--loglevel", loglevel]
