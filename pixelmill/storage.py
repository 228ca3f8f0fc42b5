"""Where images go: one small interface, chosen by PIXELMILL_STORAGE_URL.

Keys are deterministic and objects are created once: the first complete write of a key wins and later
writes of it change nothing, so the sha256 recorded in the ledger always describes the stored bytes, even
when two workers (say, on different GPU models) both finish the same item.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class Storage(Protocol):
    url: str

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        """Store `data` under `key` unless an object is there already; True if this call created it."""
        ...

    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...


class LocalStorage:
    """A directory. Objects appear whole (temp file, fsync, hard link), so a crash never leaves half an
    image, and a link never replaces an existing file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new directory entry must survive a power cut
        finally:
            os.close(dir_fd)
        return True

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def open_storage(url: str) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "":
        return LocalStorage(Path(url))
    raise ValueError(f"PIXELMILL_STORAGE_URL: unsupported scheme {parsed.scheme!r} in {url!r} (use file://)")
