"""Encoding and uploading off the GPU's critical path.

A chunk hands its generated images to a small pool of upload threads and returns, so the GPU starts the
next batch while this one is encoded and stored. The ledger is written by one recorder thread once every
object of the chunk is durably stored: an item is never marked succeeded before its object exists. A slot
per chunk bounds how far generation may run ahead of storage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


class Slot:
    """One chunk's place in the pipeline: released exactly once, by the task (`release`) or by the recorder."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._owned = True  # by the task until `finish` hands it to the recorder

    def release(self) -> None:
        with self._lock:
            if self._owned:
                self._owned = False
                self._semaphore.release()

    def hand_over(self) -> bool:
        """Transfer the slot to the recorder; False if it was already given back."""
        with self._lock:
            if not self._owned:
                return False
            self._owned = False
            return True


class Uploads:
    def __init__(self, threads: int, *, ahead: int = 2) -> None:
        self._store = ThreadPoolExecutor(threads, thread_name_prefix="pixelmill-upload")
        self._record = ThreadPoolExecutor(1, thread_name_prefix="pixelmill-record")
        self._slots = threading.BoundedSemaphore(ahead)
        self._pending: set[Future[Any]] = set()
        self._busy: dict[int, int] = {}  # item id -> chunks holding it (a duplicate message may overlap)
        self._lock = threading.Lock()

    def begin(self) -> Slot:
        """Take a slot for one chunk; blocks while `ahead` chunks are still being stored. The caller must
        pass it to `finish` or give it back with `Slot.release` (safe to call after `finish` too)."""
        self._slots.acquire()
        return Slot(self._slots)

    def store(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn(*args, **kwargs)` on an upload thread."""
        return self._store.submit(fn, *args, **kwargs)

    def busy(self) -> set[int]:
        """Items handed over and not yet recorded: still held by this process."""
        with self._lock:
            return set(self._busy)

    def finish(
        self,
        slot: Slot,
        items: Collection[int],
        stores: Mapping[int, Future[S]],
        record: Callable[[Mapping[int, Future[S]]], T],
    ) -> Future[T]:
        """Run `record(stores)` on the recorder thread once every store is done, then free the chunk's slot."""

        def run() -> T:
            try:
                wait(stores.values())
                return record(stores)
            finally:
                with self._lock:
                    for item in items:
                        self._busy[item] -= 1
                        if not self._busy[item]:
                            del self._busy[item]
                self._slots.release()

        with self._lock:
            if not slot.hand_over():
                raise RuntimeError("chunk slot was already released")
            for item in items:
                self._busy[item] = self._busy.get(item, 0) + 1
            future = self._record.submit(run)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # The items stay `running` under this process's lease; the reconciler re-queues them.
            log.error("recording a chunk failed", exc_info=future.exception())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for every chunk handed over so far to be stored and recorded; True if all finished."""
        with self._lock:
            pending = set(self._pending)
        return not wait(pending, timeout=timeout).not_done

    def close(self, timeout: float | None = None) -> None:
        """Drain (at most `timeout` seconds), then stop the threads; what is left is recovered by the
        reconciler like the work of a killed process."""
        drained = self.drain(timeout)
        if not drained:
            log.warning("uploads still pending at exit; their items will be re-queued", extra={"timeout": timeout})
        self._store.shutdown(wait=drained, cancel_futures=not drained)
        self._record.shutdown(wait=drained, cancel_futures=not drained)
