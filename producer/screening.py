"""The prompt filter over a submission's fresh prompts: here for a few, in helper processes for many.

The filter is pure Python at 15–40 µs a prompt, so a 100k-row first submission would spend 2–3 s in it on
one core while the database work waits. From the first batch with PARALLEL_MIN fresh prompts on, batches go to
PIXELMILL_SUBMIT_PROCESSES helpers, each `python -m producer.screening SOURCES…` building the same filter once
and answering one JSON line of verdicts per JSON line of prompts, while the submit writes the batch before.

Plain subprocesses, not multiprocessing: spawn and forkserver import the caller's `__main__` again in every
helper, and a submission script without a `__main__` guard would run again there (a second job). A helper that
cannot start or dies costs speed, never a verdict: its batches are checked in this process instead.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the filter itself is imported where it runs: a rerun with nothing fresh never needs it
    from contract.promptfilter import Match, PromptFilter

log = logging.getLogger(__name__)

PARALLEL_MIN = 500  # fresh prompts in one batch that make starting helpers worth it (~0.4 s of CPU each)
_ROOT = str(Path(__file__).resolve().parent.parent)  # where `producer` and `pixelmill` are importable from


class HelperGone(RuntimeError):
    """A helper process exited before answering."""


def default_processes() -> int:
    """One helper per core beyond this process's, at most 4 (the writer keeps up with about that many)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _Helper:
    """One helper process: requests in order on its stdin, answers in the same order on its stdout."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "producer.screening", *sources],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._waiting: deque[Future[list[Match | None]]] = deque()
        self._lock = threading.Lock()
        # Requests go out on a thread: while the helper starts, a full pipe must not stop the submit reading on.
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        for target, name in ((self._read, "reader"), (self._write, "writer")):
            threading.Thread(target=target, name=f"prompt-filter-helper-{name}", daemon=True).start()

    def submit(self, prompts: Sequence[str]) -> Future[list[Match | None]]:
        future: Future[list[Match | None]] = Future()
        with self._lock:
            self._waiting.append(future)
        # ASCII JSON: any str survives the pipe, lone surrogates included (UTF-8 cannot carry those).
        self._outbox.put(json.dumps(list(prompts)).encode() + b"\n")
        return future

    def _write(self) -> None:
        assert self.proc.stdin is not None
        try:
            while (line := self._outbox.get()) is not None:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            self.proc.stdin.close()
        except BaseException:  # noqa: BLE001 (whatever stops the requests, the reader fails those waiting)
            self.proc.kill()

    def _read(self) -> None:
        from contract.promptfilter import Match

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                future = self._waiting.popleft()
            try:
                answer = [Match(*found) if found else None for found in json.loads(line)]
            except (ValueError, TypeError) as exc:
                future.set_exception(HelperGone(f"prompt filter helper {self.proc.pid}: bad answer ({exc})"))
                continue
            future.set_result(answer)
        code = self.proc.wait()
        with self._lock:
            while self._waiting:
                self._waiting.popleft().set_exception(HelperGone(f"prompt filter helper exited with {code}"))

    def close(self) -> None:
        """End of input: the helper exits once its last answer is written; nothing waits for it here."""
        self._outbox.put(None)


class Screen:
    """`check(prompts)` → a Future of one verdict per prompt (None: allowed), in order; `verdicts(future,
    prompts)` its result, checked here if its helper died. `close()` when done."""

    def __init__(self, sources: tuple[str, ...], processes: int) -> None:
        self.sources = sources
        self.processes = processes
        self._local: PromptFilter | None = None
        self._helpers: list[_Helper] = []
        self._next = 0

    def warm(self) -> None:
        """Start the helpers now (for input that is large enough to need them): each builds its filter while
        this process is still setting up, instead of when the first batch of prompts is ready."""
        if not self._helpers and self.processes > 0:
            self._start()

    def check(self, prompts: Sequence[str]) -> Future[list[Match | None]]:
        if not self._helpers and self.processes > 0 and len(prompts) >= PARALLEL_MIN:
            self._start()
        if self._helpers and prompts:
            helper = self._helpers[self._next % len(self._helpers)]
            self._next += 1
            return helper.submit(prompts)
        done: Future[list[Match | None]] = Future()
        done.set_result(self.check_here(prompts))
        return done

    def verdicts(self, future: Future[list[Match | None]], prompts: Sequence[str]) -> list[Match | None]:
        try:
            return future.result()
        except HelperGone as exc:
            self._stop(exc)
            return self.check_here(prompts)

    def check_here(self, prompts: Sequence[str]) -> list[Match | None]:
        if not prompts:
            return []
        if self._local is None:
            from contract import promptfilter

            self._local = promptfilter.load(self.sources)
        return [self._local.check(prompt) for prompt in prompts]

    def close(self) -> None:
        for helper in self._helpers:
            helper.close()
        self._helpers = []

    def _start(self) -> None:
        try:
            for _ in range(self.processes):
                self._helpers.append(_Helper(self.sources))
        except OSError as exc:  # no processes here (limits, no executable)
            self._stop(exc)

    def _stop(self, exc: BaseException) -> None:
        if self.processes:
            log.warning("prompt filter helpers unavailable; checking in this process", extra={"error": str(exc)})
        for helper in self._helpers:
            helper.close()
            helper.proc.kill()
        self._helpers = []
        self.processes = 0


def serve(sources: Sequence[str]) -> None:
    """The helper's loop: a JSON list of prompts per input line → a JSON list of verdicts per output line
    (null, or [category, term])."""
    from contract import promptfilter

    lists = promptfilter.load(tuple(sources))
    out = sys.stdout.buffer  # UTF-8 bytes both ways, whatever the locale
    for line in sys.stdin.buffer:
        verdicts = [(m.category, m.term) if (m := lists.check(p)) else None for p in json.loads(line)]
        out.write(json.dumps(verdicts).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve(sys.argv[1:])
