"""Outages cost no items, the embedded broker heals itself, and nothing on the host can hijack a worker.

Fault tests run a real worker on the tiny model (64×64, 4 steps) and hold an outage for OUTAGE_SECONDS
(default 60, the figure the issue asks for; set the environment variable lower for a quick local run).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest import Env, finished, write_catalogue
from contract.broker import BrokerError, EmbeddedRedis
from contract.faults import is_infra, mask
from contract.queue import make_celery
from contract.schema import Item, State
from contract.storage import LocalStorage

OUTAGE = float(os.environ.get("OUTAGE_SECONDS", "60"))
ITEMS = 12
# Items back off for about as long as the outage has lasted so far (contract/faults.py: 2, 4, 8 … s), so after
# a 60 s outage the next try could come 75 s later. The outage tests cap the delay at 10 s: items still back
# off several times through the whole outage (the cap is reached early on), and succeed seconds after it ends.
RETRY_CAP = {"PIXELMILL_INFRA_RETRY_MAX_DELAY": "10"}


def attempts(env: Env, job: int) -> list[tuple[str, int]]:
    ledger = env.ledger()
    with ledger.session() as session:
        rows = [(i.state.value, i.attempts) for i in session.scalars(select(Item).where(Item.job_id == job))]
    ledger.close()
    return rows


def wait_running(env: Env, job: int, at_least: int = 1, timeout: float = 240) -> None:
    env.wait_for(job, lambda c: c["succeeded"] + c["running"] >= at_least, timeout=timeout)


# --- unit: classification, masking, temp sweep, socket ownership -------------------------------------------


def test_infrastructure_errors_are_told_from_item_errors() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError
    from sqlalchemy.exc import OperationalError

    assert is_infra(PermissionError(13, "Permission denied", "/images"))
    assert is_infra(OperationalError("UPDATE items", {}, Exception("database is locked")))
    assert is_infra(EndpointConnectionError(endpoint_url="http://s3"))
    assert is_infra(ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Put"))
    assert not is_infra(
        ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Put")
    )
    assert not is_infra(OSError("cannot write mode RGBA as JPEG"))  # PIL: no errno, the image's fault
    assert not is_infra(RuntimeError("CUDA out of memory"))
    assert not is_infra(ValueError("bad prompt"))


def test_secrets_are_masked() -> None:
    assert (
        mask("redis://:pw@h:1/0 and postgresql+psycopg://u:secret@db/x")
        == "redis://:***@h:1/0 and postgresql+psycopg://u:***@db/x"
    )


def test_orphaned_temp_files_are_swept_after_the_grace(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.create("jobs/1/a/0.png", b"png", "image/png")
    old = tmp_path / "jobs" / "1" / "a" / ".tmp-killed"
    new = tmp_path / "jobs" / "1" / "a" / ".tmp-in-progress"
    old.write_bytes(b"half")
    new.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert list(storage.keys()) == ["jobs/1/a/0.png"]  # temp files are never listed as objects
    assert storage.sweep_temp(3600) == 1
    assert not old.exists() and new.exists() and (tmp_path / "jobs/1/a/0.png").exists()


def test_long_data_dirs_get_a_private_unpredictable_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    broker = EmbeddedRedis(deep)
    socket_dir = broker.socket.parent
    assert not str(socket_dir).startswith(str(deep)) and socket_dir.name.startswith("pixelmill-")
    assert socket_dir.stat().st_mode & 0o777 == 0o700 and socket_dir.stat().st_uid == os.getuid()
    assert (deep / "broker").stat().st_mode & 0o777 == 0o700
    assert EmbeddedRedis(deep).socket == broker.socket  # recorded: every process finds the same one
    assert (deep / "broker" / "socket-dir").read_text().strip() == str(socket_dir)


@pytest.mark.skipif(os.getuid() != 0, reason="planting as another user needs root (CI runs as root)")
@pytest.mark.parametrize("where", ["broker-dir", "socket", "recorded-dir"])
def test_a_socket_planted_by_another_user_is_refused(tmp_path: Path, where: str) -> None:
    """Another local user (uid 65534, in a forked child) plants the directory or the socket at a path
    pixelmill would use; pixelmill refuses to connect to it or publish into it."""
    import socket as socketlib
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="pixelmill-plant-"))  # pytest's tmp_path is not reachable by nobody
    os.chmod(shared, 0o777)
    data = shared / "data" if where != "recorded-dir" else shared / ("d" * 60) / ("e" * 60)
    data.mkdir(parents=True)
    for folder in [data, *data.parents]:
        if folder == shared:
            break
        os.chmod(folder, 0o777)
    os.chmod(data, 0o777)
    if where == "recorded-dir":
        EmbeddedRedis(data).socket  # noqa: B018 (creates and records the private dir)
        target = Path((data / "broker" / "socket-dir").read_text().strip())
        shutil.rmtree(target)  # e.g. /tmp was cleaned; the other user re-creates the recorded name
        os.chmod(target.parent, 0o1777) if target.parent != Path("/tmp") else None
    if where == "socket":
        (data / "broker").mkdir(mode=0o777)
        os.chmod(data / "broker", 0o777)  # a careless mode: pixelmill tightens it, but the socket is not ours
    pid = os.fork()
    if pid == 0:  # the other user
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.umask(0)
            if where == "broker-dir":
                (data / "broker").mkdir(mode=0o777)
            elif where == "socket":
                socketlib.socket(socketlib.AF_UNIX).bind(str(data / "broker" / "redis.sock"))
            else:
                target.mkdir(mode=0o777)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    broker = EmbeddedRedis(data)
    if where == "recorded-dir":  # not ours: a fresh private dir is made and recorded instead
        assert broker.socket.parent != target and broker.socket.parent.stat().st_uid == os.getuid()
        return
    with pytest.raises(BrokerError, match="belongs to uid 65534"):
        broker.ensure_running()


# --- remote control -----------------------------------------------------------------------------------------


def test_a_shutdown_broadcast_does_not_stop_a_worker(env: Env) -> None:
    """Anyone who can publish on the broker can broadcast control commands; a worker answers ping (and Flower's
    read-only inspection) but ignores shutdown, pool_restart, rate_limit and the like."""
    worker = env.start_worker()
    app = make_celery(env.settings())
    deadline = time.monotonic() + 120
    while not app.control.ping(timeout=1):
        assert time.monotonic() < deadline and worker.poll() is None, env.worker_logs()[-3000:]
    app.control.broadcast("shutdown")
    app.control.broadcast("pool_restart", arguments={"reload": True})
    app.control.broadcast("rate_limit", arguments={"task_name": "pixelmill.generate", "rate_limit": "1/h"})
    time.sleep(5)
    assert worker.poll() is None
    assert app.control.ping(timeout=3)
    assert app.control.inspect(timeout=3).stats()  # Flower's read-only view still works


# --- outages ------------------------------------------------------------------------------------------------


def _finish(env: Env, job: int) -> None:
    counts = env.wait_for(job, finished, timeout=OUTAGE + 420)
    assert counts["succeeded"] == ITEMS and counts["failed"] == 0, counts
    assert all(n == 1 for _, n in attempts(env, job)), attempts(env, job)  # no attempt used by the outage


@pytest.mark.e2e
@pytest.mark.minute(2)
def test_a_storage_outage_fails_no_item(env: Env, tmp_path: Path) -> None:
    """The images directory is replaced by a file for OUTAGE seconds mid-job: stores fail with ENOTDIR,
    items back off with their attempts given back, and all succeed once it is back."""
    env.vars.update(RETRY_CAP)
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "c.csv", ITEMS), "--name", "storage-outage")["job"]
    wait_running(env, job, 2)
    images = env.data_dir / "images"
    images.mkdir(exist_ok=True)
    aside = env.data_dir / "images-aside"
    images.rename(aside)
    images.write_text("storage is down")
    time.sleep(OUTAGE)
    images.unlink()
    aside.rename(images)
    _finish(env, job)
    assert not list(images.rglob(".tmp-*"))


@pytest.mark.e2e
@pytest.mark.minute(2)
def test_a_locked_database_fails_no_item(env: Env, tmp_path: Path) -> None:
    """The test holds SQLite's write lock for OUTAGE seconds mid-job: claims, lease renewals and recordings
    wait and try again; nothing fails, no child is replaced."""
    # Recording retries for half a lease (450 s by default); the test's 40 s lease would be shorter than the
    # outage, so it gets a lease the outage fits in, as the defaults do.
    env.vars.update(
        PIXELMILL_SQLITE_BUSY_TIMEOUT="5", PIXELMILL_LEASE_SECONDS="300", PIXELMILL_VISIBILITY_TIMEOUT="600"
    )
    env.vars.update(RETRY_CAP)
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "c.csv", ITEMS), "--name", "db-outage")["job"]
    wait_running(env, job, 2)
    db = sqlite3.connect(env.data_dir / "pixelmill.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    time.sleep(OUTAGE)
    db.execute("ROLLBACK")
    db.close()
    _finish(env, job)
    assert "Hard time limit" not in env.worker_logs()


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_a_killed_embedded_broker_heals_itself(env: Env, tmp_path: Path) -> None:
    """SIGKILL the embedded Redis mid-job; nobody runs `pixelmill broker start`: the worker's reconciler
    restarts it from its append-only file and the job finishes."""
    env.vars.update(RETRY_CAP)
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "c.csv", ITEMS), "--name", "broker-outage")["job"]
    wait_running(env, job, 2)
    pid = int((env.data_dir / "broker" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    counts = env.wait_for(job, finished, timeout=OUTAGE + 420)
    assert counts["succeeded"] == ITEMS and counts["failed"] == 0, counts
    assert EmbeddedRedis(env.data_dir).is_running()
    assert all(state == State.succeeded.value for state, _ in attempts(env, job))
    assert all(n == 1 for _, n in attempts(env, job)), attempts(env, job)


@pytest.mark.e2e
@pytest.mark.minute(2)
def test_an_s3_outage_fails_no_item(tmp_path: Path, tiny_model: Path, test_servers: Any) -> None:
    """Every object PUT answers 503 SlowDown for OUTAGE seconds mid-job (the fault proxy of tests/servers.py
    in front of moto_server): boto3's own retries run out, the items back off without using attempts, and
    all succeed once the store answers again."""
    import servers

    from conftest import S3_CREDENTIALS

    s3 = test_servers.get("s3")
    proxy = servers.FaultyS3Proxy(s3.url, fail_first=0, status=503).start()
    bucket = test_servers.next_name("pm")
    s3.create_bucket(bucket)
    env = Env(
        tmp_path / "data",
        tiny_model,
        {
            "PIXELMILL_STORAGE_URL": f"s3://{bucket}/public",
            "PIXELMILL_S3_ENDPOINT_URL": proxy.url,
            "PIXELMILL_S3_REGION": "us-east-1",
            "PIXELMILL_S3_MAX_ATTEMPTS": "2",
            **RETRY_CAP,
            **S3_CREDENTIALS,
        },
        name="s3-outage",
    )
    env.data_dir.mkdir()
    try:
        env.start_worker()
        job = env.submit(write_catalogue(tmp_path / "c.csv", ITEMS), "--name", "s3-outage")["job"]
        wait_running(env, job, 1)
        proxy.fail_first = 10**9
        time.sleep(OUTAGE)
        proxy.fail_first = 0
        with proxy.lock:
            proxy.put_attempts.clear()
        _finish(env, job)
        assert len(list(env.storage().keys(f"jobs/{job}/"))) == ITEMS
    finally:
        env.close()
        proxy.stop()
