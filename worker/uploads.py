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
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Uploads:
    def __init__(self, threads: int, *, ahead: int = 2) -> None:
        self._store = ThreadPoolExecutor(threads, thread_name_prefix="pixelmill-upload")
        self._record = ThreadPoolExecutor(1, thread_name_prefix="pixelmill-record")
        self._slots = threading.BoundedSemaphore(ahead)
        self._pending: set[Future[Any]] = set()
        self._busy: dict[int, int] = {}  # item id -> chunks holding it (a duplicate message may overlap)
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Take a slot for one chunk; blocks while `ahead` chunks are still being stored."""
        self._slots.acquire()

    def abandon(self) -> None:
        """Give the slot back for a chunk that ends without calling `finish`."""
        self._slots.release()

    def store(self, fn: Callable[[], T]) -> Future[T]:
        return self._store.submit(fn)

    def busy(self) -> set[int]:
        """Items handed over and not yet recorded: still held by this process."""
        with self._lock:
            return set(self._busy)

    def finish(self, items: Collection[int], stores: Mapping[int, Future[Any]],
               record: Callable[[Mapping[int, Future[Any]]], T]) -> Future[T]:
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

    def close(self) -> None:
        self.drain()
        self._store.shutdown(wait=True)
        self._record.shutdown(wait=True)
