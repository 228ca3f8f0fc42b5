"""Removing the temp files that interrupted local stores leave behind (run by each reconciler pass)."""

from __future__ import annotations

import logging
import time

from contract.settings import Settings

log = logging.getLogger(__name__)


class Sweeper:
    """Removes temp files of interrupted local stores, at most once per `every` seconds."""

    def __init__(self, settings: Settings, every: float = 600.0) -> None:
        self.settings, self.every = settings, every
        self._last: float | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            return 0
        self._last = now
        if self.settings.resolved_storage_url.startswith("s3:"):
            return 0
        from contract.storage import LocalStorage, open_storage

        storage = open_storage(self.settings)
        if not isinstance(storage, LocalStorage):
            return 0
        removed = storage.sweep_temp(self.settings.temp_grace)
        if removed:
            log.warning("removed temp files of interrupted stores", extra={"files": removed})
        return removed
