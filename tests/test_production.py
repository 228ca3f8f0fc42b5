"""Production pieces against real servers and real processes: S3 storage through a store that fails PUTs,
one worker per (fake) GPU, and Flower on the same broker."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import servers
from sqlalchemy import select
from test_end_to_end import assert_exactly_once

from conftest import (
    FAST_TIMINGS,
    S3_CREDENTIALS,
    Env,
    Servers,
    finished,
    missing_server,
    settled_depth,
    write_catalogue,
)
from contract.queue import Chunk, make_celery, publish, queue_depth, queue_for
from contract.scheduling import Scheduler
from contract.schema import Item, Worker
from contract.settings import Settings
from contract.storage import S3Storage, open_storage

pytestmark = pytest.mark.e2e
HOST = socket.gethostname()


# --- S3 -----------------------------------------------------------------------------------------------


@pytest.fixture
def s3_env(tmp_path: Path, tiny_model: Path, test_servers: Servers) -> Iterator[tuple[Env, servers.FaultyS3Proxy]]:
    """The embedded ledger and broker, with storage on moto_server behind a proxy that rejects the first
    two PUTs of every object with 503 SlowDown."""
    s3 = test_servers.get("s3")
    proxy = servers.FaultyS3Proxy(s3.url, fail_first=2, status=503)
    proxy.start()
    bucket = test_servers.next_name("pm")
    s3.create_bucket(bucket)
    backend = {
        "PIXELMILL_STORAGE_URL": f"s3://{bucket}/public",
        "PIXELMILL_S3_ENDPOINT_URL": proxy.url,
        "PIXELMILL_S3_REGION": "us-east-1",
        **S3_CREDENTIALS,
    }
    env = Env(tmp_path / "data", tiny_model, backend, name="s3-faulty")
    env.data_dir.mkdir()
    yield env, proxy
    env.close()
    proxy.stop()


def test_s3_store_that_rejects_the_first_two_puts_still_ends_with_every_item_once(
    s3_env: tuple[Env, servers.FaultyS3Proxy], tmp_path: Path
) -> None:
    env, proxy = s3_env
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 8))["job"]
    counts = env.wait_for(job, finished)
    assert counts["succeeded"] == 8, counts
    rows = assert_exactly_once(env, job, 8)
    assert all(item.attempts == 1 for item, _ in rows), "boto3's retries, not item retries, absorbed the 503s"

    storage = env.storage()
    assert isinstance(storage, S3Storage)
    for _item, image in rows:
        assert image is not None
        key = f"{storage.prefix}/{image.storage_key}"
        assert proxy.rejections(storage.bucket, key) == 2 and proxy.attempts(storage.bucket, key) == 3
        head = storage.client.head_object(Bucket=storage.bucket, Key=key)
        assert head["ContentType"] == "image/png"
        assert head["Metadata"]["sha256"] == image.sha256
        assert head["ContentLength"] == image.bytes

    # A presigned URL from the CLI serves the recorded bytes.
    _, first = rows[0]
    assert first is not None
    url = env.cli("url", str(job), rows[0][0].item_key).stdout.strip()
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert hashlib.sha256(response.read()).hexdigest() == first.sha256


@pytest.mark.parametrize("conditional", [True, False])
def test_s3_objects_are_created_once_with_md5_and_type(
    test_servers: Servers, tmp_path: Path, conditional: bool
) -> None:
    """The first complete upload of a key wins, by If-None-Match or by HEAD-before-PUT, and every PUT
    carries Content-MD5 (boto3 adds no CRC32 of its own: checksums only "when required")."""
    s3 = test_servers.get("s3")
    bucket = test_servers.next_name("pm")
    s3.create_bucket(bucket)
    proxy = servers.FaultyS3Proxy(s3.url, fail_first=0)
    proxy.start()
    try:
        settings = Settings(
            data_dir=tmp_path,
            storage_url=f"s3://{bucket}/p",
            s3_endpoint_url=proxy.url,
            s3_region="us-east-1",
            s3_conditional_writes=conditional,
        )
        storage = open_storage(settings)
        assert storage.create("jobs/1/A/0.png", b"first", "image/png") is True
        assert storage.create("jobs/1/A/0.png", b"second", "image/png") is False
        assert storage.get("jobs/1/A/0.png") == b"first"
        assert storage.exists("jobs/1/A/0.png") and not storage.exists("jobs/1/B/0.png")
        assert list(storage.keys("jobs/1/")) == ["jobs/1/A/0.png"]
        puts = proxy.put_headers()
        assert len(puts) == (2 if conditional else 1)  # HEAD-before-PUT never sends the second one
        md5s = {base64.b64encode(hashlib.md5(body).digest()).decode() for body in (b"first", b"second")}
        for headers in puts:
            assert headers["content-md5"] in md5s and headers["content-type"] == "image/png"
            assert not [h for h in headers if h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm"]
            assert headers.get("if-none-match") == ("*" if conditional else None)
        with pytest.raises(ValueError, match="escapes"):
            storage.create("../outside.png", b"x", "image/png")
    finally:
        proxy.stop()


# --- one worker per GPU ---------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment; empty once it has exited (a zombie's is unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(part.split("=", 1) for part in raw.decode(errors="replace").split("\0") if "=" in part)


def pinned_children(pid: int) -> dict[str, int]:
    """CUDA_VISIBLE_DEVICES -> pid for each live child of `pid`."""
    pinned = {}
    for child in children_of(pid):
        gpu = environ_of(child).get("CUDA_VISIBLE_DEVICES")
        if gpu is not None:
            assert gpu not in pinned, f"two workers pinned to GPU {gpu}"
            pinned[gpu] = child
    return pinned


def nodes_answering(env: Env) -> set[str]:
    replies = make_celery(env.settings()).control.ping(timeout=1.0)
    return {name for reply in replies for name in reply}


@pytest.mark.minute(2)
def test_worker_per_gpu_pins_each_process_restarts_the_dead_and_stops_gracefully(env: Env, tmp_path: Path) -> None:
    supervisor = env.start_worker("--gpus", "all", PIXELMILL_FAKE_GPUS="0,1,2")
    expected = {f"gpu{i}@{HOST}" for i in range(3)}
    deadline = time.monotonic() + 120
    while nodes_answering(env) != expected:
        assert supervisor.poll() is None and time.monotonic() < deadline, env.worker_logs()[-4000:]
        time.sleep(0.5)

    # One process per GPU, each seeing only its own device; its prefork child inherits the pin.
    workers = children_of(supervisor.pid)
    pinned = pinned_children(supervisor.pid)
    assert sorted(pinned) == ["0", "1", "2"] and len(workers) == 3
    for gpu, pid in pinned.items():
        assert all(environ_of(child)["CUDA_VISIBLE_DEVICES"] == gpu for child in children_of(pid))

    # A worker that dies is restarted, pinned to the same GPU.
    os.kill(pinned["1"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now_pinned = pinned_children(supervisor.pid)
        if len(now_pinned) == 3 and now_pinned["1"] != pinned["1"]:
            break
        assert time.monotonic() < deadline, env.worker_logs()[-4000:]
        time.sleep(0.2)
    assert now_pinned["0"] == pinned["0"] and now_pinned["2"] == pinned["2"]
    deadline = time.monotonic() + 120
    while nodes_answering(env) != expected:
        assert time.monotonic() < deadline, env.worker_logs()[-4000:]
        time.sleep(0.5)

    # All three consume: one item per message, so the chunks spread over the workers.
    env.vars["PIXELMILL_BATCH_SIZE"] = "1"
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 30), "--steps", "12")["job"]
    ledger = env.ledger()
    deadline = time.monotonic() + 180
    while True:
        with ledger.session() as session:
            holders = set(session.scalars(select(Item.worker).where(Item.job_id == job, Item.worker.is_not(None))))
        nodes = {(holder or "").rsplit(":", 1)[0] for holder in holders}
        if nodes == expected:
            break
        assert time.monotonic() < deadline, (nodes, env.worker_logs()[-4000:])
        time.sleep(0.1)

    # SIGTERM: every worker finishes its batch and hands the rest back; nothing is left running.
    os.kill(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=120) == 0, env.worker_logs()[-4000:]
    assert children_of(supervisor.pid) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in now_pinned.values())
    with ledger.session() as session:
        states = [item.state.value for item in session.scalars(select(Item).where(Item.job_id == job))]
    assert "running" not in states, states

    env.start_worker()  # whatever was handed back is done by a fresh worker, exactly once
    assert env.wait_for(job, finished)["succeeded"] == 30
    rows = assert_exactly_once(env, job, 30)
    assert all(item.attempts == 1 for item, _ in rows), (
        "a graceful stop interrupted an item",
        [(item.item_key, item.attempts, item.error, item.worker) for item, _ in rows if item.attempts != 1],
        env.worker_logs()[-6000:],
    )
    ledger.close()


def test_gpu_list_is_checked_against_the_host(env: Env) -> None:
    for spec, message in [("0,7", "no GPU 7"), ("0,0", "twice"), ("x", "expected 'all'")]:
        proc = subprocess.run(
            [sys.executable, "-m", "pixelmill", "worker", "--gpus", spec],
            env={**env.vars, "PIXELMILL_FAKE_GPUS": "0,1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "pixelmill", "worker", "--gpus", "all"],
        env={**env.vars, "PIXELMILL_FAKE_GPUS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no GPU found" in proc.stderr


# --- Flower ---------------------------------------------------------------------------------------------


def test_flower_and_ping_see_the_workers_on_the_same_broker(env: Env) -> None:
    env.start_worker()
    node = f"pixelmill@{HOST}"
    port = servers.free_port()
    log = open(env.data_dir / "flower.log", "wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "pixelmill", "flower", "--port", str(port)],
        env={**env.vars, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        workers: dict[str, object] = {}
        while node not in workers:
            assert flower.poll() is None, (env.data_dir / "flower.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (workers, (env.data_dir / "flower.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10) as r:
                    workers = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
                continue
            time.sleep(0.5)
        assert env.queue in {q["name"] for q in workers[node]["active_queues"]}  # type: ignore[index]
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=30)

    ping = env.cli("ping", "--node", "pixelmill@%h")
    assert node in ping.stdout
    missing = env.cli("ping", "--node", "nobody@nowhere", "--timeout", "1", check=False)
    assert missing.returncode == 1 and "no answer" in missing.stderr


def test_settings_name_the_variable_for_a_consumer_timeout_below_the_time_limit(tmp_path: Path) -> None:
    from contract.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="PIXELMILL_RABBITMQ_CONSUMER_TIMEOUT"):
        load_settings(data_dir=tmp_path, broker_url="amqp://guest@localhost//", rabbitmq_consumer_timeout=300)
    load_settings(data_dir=tmp_path, broker_url="redis://localhost/0", rabbitmq_consumer_timeout=300)


# --- RabbitMQ -------------------------------------------------------------------------------------------


def test_rabbitmq_queues_are_quorum_queues_named_by_model(
    test_servers: Servers, tmp_path: Path, tiny_model: Path
) -> None:
    rabbit = test_servers.get("rabbitmq")
    env = Env(tmp_path / "data", tiny_model, test_servers.backend("sqlite-rabbitmq-local"), name="rabbit")
    env.data_dir.mkdir()
    try:
        env.submit(write_catalogue(tmp_path / "catalogue.csv", 8))
        app = make_celery(env.settings())
        assert queue_depth(app, env.queue) == 0  # submit publishes nothing: the scheduler does
        ledger = env.ledger()
        try:
            assert Scheduler(env.settings(), ledger, app).run_pass().messages == 1  # no live worker: a window of 1
        finally:
            ledger.close()
        assert settled_depth(app, env.queue, 1) == 1  # confirmed; a quorum queue's count may trail a moment
        listing = rabbit.ctl("list_queues", "name", "type", "--no-table-headers").stdout
        queues = dict(line.split()[:2] for line in listing.splitlines() if line.strip())
        assert queues[env.queue] == "quorum", listing
        assert env.queue.startswith("pixelmill.tiny.")
    finally:
        env.close()


def test_a_queue_deleted_under_a_running_producer_is_declared_again_not_fed_to_nothing(
    test_servers: Servers, tmp_path: Path, tiny_model: Path
) -> None:
    """kombu shares one producer pool, and its cache of declared queues, per broker URL per process; a queue
    deleted behind it must not make every later publish vanish (RabbitMQ confirms what it cannot route).
    RabbitMQ only: kombu's Redis transport deletes only the queues its own connection bound."""
    env = Env(tmp_path / "data", tiny_model, test_servers.backend("sqlite-rabbitmq-local"), name="redeclare")
    env.data_dir.mkdir()
    try:
        for attempt in range(3):
            app = make_celery(env.settings())  # a fresh app, as each test and each CLI call has: the pool is shared
            assert publish(app, [Chunk(1, (attempt, attempt + 100))], env.queue) == 1
            assert settled_depth(app, env.queue, 1) == 1, f"attempt {attempt}: the message went nowhere"
            with app.connection_for_write() as conn:
                conn.default_channel.queue_delete(env.queue)
    finally:
        env.close()


# --- queues routed by model -----------------------------------------------------------------------------


def wait_for_heartbeat(env: Env, predicate: Callable[[Worker], bool], timeout: float = 120) -> datetime:
    """The `last_seen` of the first heartbeat of the installation's one worker that satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    ledger = env.ledger()
    try:
        while True:
            with ledger.session(readonly=True) as session:
                rows = session.scalars(select(Worker)).all()
                if len(rows) == 1 and predicate(rows[0]):
                    return rows[0].last_seen
                seen = [(w.node, w.state, w.last_seen) for w in rows]
            assert time.monotonic() < deadline, f"no such heartbeat: {seen}; {env.worker_logs()[-3000:]}"
            time.sleep(0.2)
    finally:
        ledger.close()


def test_a_worker_consumes_only_the_queue_of_its_model(env: Env, tmp_path: Path) -> None:
    from worker.engine.tiny import build_tiny_pipeline

    other = build_tiny_pipeline(tmp_path / "other-model", seed=1)
    env.start_worker()  # serves env.model
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 4), "--model", str(other))["job"]
    app = make_celery(env.settings())
    other_queue = queue_for(str(other.resolve()))
    assert other_queue != env.queue
    # The worker is up (its model loaded) and has reconciled with the items past PIXELMILL_REQUEUE_AFTER, when
    # its reconciler would re-queue lost ones: it must not touch another model's work.
    deadline = time.monotonic() + 60
    while True:  # the worker's scheduler sends it (a window of one message while nobody serves its model)
        with env.ledger().session() as session:
            stamps = [t for t in session.scalars(select(Item.queued_at).where(Item.job_id == job)) if t]
        if len(stamps) == 4:
            break
        assert time.monotonic() < deadline, stamps
        time.sleep(0.2)
    queued = max(stamps)
    after = queued + timedelta(seconds=float(FAST_TIMINGS["PIXELMILL_REQUEUE_AFTER"]))
    seen = wait_for_heartbeat(env, lambda w: w.state == "ready" and w.last_seen > after)
    wait_for_heartbeat(env, lambda w: w.last_seen > seen)  # each pass beats, then reconciles: that pass is done
    with env.ledger().session() as session:
        states = set(session.scalars(select(Item.state).where(Item.job_id == job)))
    assert {s.value for s in states} == {"queued"} and settled_depth(app, other_queue, 1) == 1

    env.start_worker("--model", str(other), "--hostname", "other@%h")
    assert env.wait_for(job, finished)["succeeded"] == 4
    with env.ledger().session() as session:
        holders = set(session.scalars(select(Item.worker).where(Item.job_id == job)))
    assert {(holder or "").split("@")[0] for holder in holders} == {"other"}


def test_a_worker_refuses_a_server_database_that_was_not_upgraded(
    test_servers: Servers, tmp_path: Path, tiny_model: Path
) -> None:
    url = test_servers.get("postgres").create_database(test_servers.next_name("stale"))
    env = Env(tmp_path / "data", tiny_model, {"PIXELMILL_DATABASE_URL": url}, name="stale")
    env.data_dir.mkdir()
    try:
        for args in (["worker"], ["worker", "--gpus", "all"]):
            proc = subprocess.run(
                [sys.executable, "-m", "pixelmill", *args],
                capture_output=True,
                text=True,
                env={**env.vars, "PIXELMILL_FAKE_GPUS": "0,1"},
                timeout=120,
            )
            assert proc.returncode == 2 and "run `pixelmill db upgrade`" in proc.stderr, proc.stderr
        env.cli("db", "upgrade")
        worker = env.start_worker()
        deadline = time.monotonic() + 60
        while f"pixelmill@{HOST}" not in nodes_answering(env):
            assert worker.poll() is None and time.monotonic() < deadline, env.worker_logs()[-3000:]
    finally:
        env.close()


# --- Redis over TLS ------------------------------------------------------------------------------------


@pytest.mark.minute(1)
def test_rediss_broker_with_certificate_verification(tmp_path: Path, tiny_model: Path) -> None:
    """`rediss://…?ssl_cert_reqs=required&ssl_ca_certs=CA` end to end; a broker whose certificate does not
    verify stops `submit` before anything is written."""
    reason = servers.redis_skip_reason()
    if reason:
        missing_server("redis-server", reason)
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("server", "other"):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(certs / f"{name}.key"),
                "-out",
                str(certs / f"{name}.pem"),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    tls_port = servers.free_port()
    redis_tls = servers.RedisServer(
        tmp_path / "redis",
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(certs / "server.pem"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-auth-clients",
            "no",
        ],
    )
    redis_tls.start()
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs="
    env = Env(tmp_path / "data", tiny_model, {"PIXELMILL_BROKER_URL": url + str(certs / "other.pem")}, name="tls")
    env.data_dir.mkdir()
    try:
        catalogue = write_catalogue(tmp_path / "catalogue.csv", 4)
        refused = env.cli_submit(catalogue, template="{title}", check=False)
        assert refused.returncode == 2 and "cannot reach the broker" in refused.stderr, refused.stderr
        with env.ledger().session() as session:
            assert session.scalar(select(Item.id).limit(1)) is None

        env.backend["PIXELMILL_BROKER_URL"] = env.vars["PIXELMILL_BROKER_URL"] = url + str(certs / "server.pem")
        env.start_worker()
        job = env.submit(catalogue)["job"]
        assert env.wait_for(job, finished)["succeeded"] == 4
        assert_exactly_once(env, job, 4)
    finally:
        env.close()
        redis_tls.stop()
