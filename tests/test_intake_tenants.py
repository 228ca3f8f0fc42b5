"""The intake proves its tenant by the queue a message came on, on a real redis-server with ACL users per tenant
(issue 22: "The intake proves its tenant"), and what a request may point at stays inside its tenant (findings 1
and 4); bounds on intake messages (findings 9 and 13)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signature
from servers import RedisServer, redis_skip_reason
from sqlalchemy import select

from conftest import Env, missing_server
from contract.ledger import make_engine, upgrade
from contract.schema import Job
from contract.tenants import TenantInfo, add_tenant, revoke_tenant
from producer.request_v1 import TASK_SUBMIT

ROWS = [{"sku": "MUG-1", "title": "mug"}]


def request(rid: str, reply_to: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "request_id": rid,
        "rows": ROWS,
        "key": "sku",
        "template": "photo of {title}",
        "options": {"size": "64x64", "steps": 4},
        "reply_to": reply_to,
        **extra,
    }


def acl_user(server: RedisServer, name: str) -> str:
    """A broker user for tenant `name`, as docs/operations.md ("Broker ACLs") tells the operator to make it."""
    password = f"{name}-secret-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(server.url)
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL",
        "SETUSER",
        name,
        "reset",
        "on",
        f">{password}",
        f"~pixelmill.intake.{name}",
        f"~pixelmill.intake.{name}\x06\x16*",  # kombu's priority lists of the queue (LLEN on declare)
        f"~pixelmill.reply.{name}.*",
        f"~_kombu.binding.pixelmill.intake.{name}",
        f"~_kombu.binding.pixelmill.reply.{name}.*",
        f"~_kombu.binding_permanent.pixelmill.intake.{name}",
        f"~_kombu.binding_permanent.pixelmill.reply.{name}.*",
        "resetchannels",
        "-@all",
        "+@list",
        "+sadd",
        "+smembers",
        "+@connection",
        "+@transaction",
        "-@dangerous",
    )
    return f"redis://{name}:{password}@127.0.0.1:{server.port}/0"


def send(
    broker: str,
    queue: str,
    message: Any,
    *,
    task: str = "pixelmill.submit",
    extra_args: list[Any] | None = None,
    **options: Any,
) -> None:
    """What any Celery client does: send the task `pixelmill.submit` (or `task`) to a queue."""
    from celery import Celery

    client = Celery(broker=broker, set_as_current=False)
    try:
        client.send_task(task, args=[message, *(extra_args or [])], queue=queue, **options)
    finally:
        client.close()


def next_event(broker: str, queue: str, timeout: float = 60) -> dict[str, Any]:
    """The next `job.accepted` or `job.rejected` on a reply queue (a `job.finished` is passed over), read as the
    tenant's own user (BRPOP: no ack, so the user needs no access to kombu's shared `unacked` keys)."""
    client = redis.Redis.from_url(broker)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        popped = client.brpop([queue], timeout=min(4, max(1, int(left))))  # under the client socket timeout
        if popped is None:
            continue
        envelope = json.loads(popped[1])
        assert envelope["headers"]["task"] == "pixelmill.event"
        event: dict[str, Any] = json.loads(base64.b64decode(envelope["body"]))[0][0]
        if event["type"] in ("job.accepted", "job.rejected"):
            return event
    raise AssertionError(f"no event on {queue} within {timeout}s")


@pytest.fixture(params=["sqlite", "postgresql"])
def acl_env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[tuple[Env, RedisServer]]:
    """A redis-server with ACL users beside the embedded ledger, or beside PostgreSQL (migrated on purpose)."""
    if reason := redis_skip_reason():
        missing_server("redis-server", reason)
    ledger: dict[str, str] = {}
    if request.param == "postgresql":
        servers = request.getfixturevalue("test_servers")
        ledger["PIXELMILL_DATABASE_URL"] = servers.get("postgres").create_database(servers.next_name("acl"))
    server = RedisServer(tmp_path / "redis", extra_args=["--proto-max-bulk-len", "2mb"])
    server.start()
    installation = Env(
        tmp_path / "data",
        tiny_model,
        {
            "PIXELMILL_BROKER_URL": server.url,
            "PIXELMILL_INTAKE_TENANT_REFRESH": "0.3",
            "PIXELMILL_INTAKE_MAX_MESSAGE_BYTES": str(256 * 1024),
            **ledger,
        },
    )
    installation.data_dir.mkdir()
    if ledger:
        engine = make_engine(installation.settings())
        upgrade(engine)
        engine.dispose()
    try:
        yield installation, server
    finally:
        installation.close()
        server.stop()


def tenants(env: Env, *names: str, source_roots: tuple[str, ...] = ()) -> dict[str, TenantInfo]:
    ledger = env.ledger()
    try:
        with ledger.session() as session:
            return {n: add_tenant(session, n, source_roots=source_roots, with_token=False)[0] for n in names}
    finally:
        ledger.close()


def jobs(env: Env) -> dict[str, int]:
    """request_id -> owning tenant id of every job."""
    ledger = env.ledger()
    try:
        with ledger.session(readonly=True) as session:
            return {rid: owner for rid, owner in session.execute(select(Job.request_id, Job.tenant_id)) if rid}
    finally:
        ledger.close()


def forged_envelope(server: RedisServer, message: dict[str, Any], claims: str) -> bytes:
    """A real Celery envelope for `message` whose delivery facts claim the queue `claims`."""
    scratch = f"scratch.{uuid.uuid4().hex}"
    send(server.url, scratch, message)
    raw = redis.Redis.from_url(server.url).rpop(scratch)
    assert isinstance(raw, bytes)
    envelope = json.loads(raw)
    envelope["properties"]["delivery_info"] = {"exchange": claims, "routing_key": claims}
    return json.dumps(envelope).encode()


def test_the_intake_proves_the_tenant_by_the_acl_locked_queue_a_message_came_on(
    acl_env: tuple[Env, RedisServer],
) -> None:
    env, server = acl_env
    owners = tenants(env, "alice", "bob")
    alice, bob = acl_user(server, "alice"), acl_user(server, "bob")
    env.start("intake")

    # alice publishes to her queue and reads her reply queue: the job is hers.
    send(alice, "pixelmill.intake.alice", request("a-1", "pixelmill.reply.alice.events"))
    accepted = next_event(alice, "pixelmill.reply.alice.events")
    assert (accepted["type"], accepted["request_id"]) == ("job.accepted", "a-1")
    assert jobs(env) == {"a-1": owners["alice"].id}

    # alice cannot push to bob's queue, nor read his replies: the broker says NOPERM.
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(alice).lpush("pixelmill.intake.bob", b"{}")
    with pytest.raises(Exception, match="(?i)noperm|permission"):
        send(alice, "pixelmill.intake.bob", request("a-2", "pixelmill.reply.alice.events"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(alice).rpop("pixelmill.reply.bob.events")
    with pytest.raises(redis.exceptions.NoPermissionError):  # nor touch kombu's own bookkeeping
        redis.Redis.from_url(alice).lpush("unacked", b"x")

    # A forged envelope on her own queue claiming bob's queue is still alice's; so is a reply_to in bob's space,
    # which is refused and answered nowhere (bob hears nothing).
    forged = forged_envelope(server, request("a-3", "pixelmill.reply.alice.events"), claims="pixelmill.intake.bob")
    redis.Redis.from_url(alice).lpush("pixelmill.intake.alice", forged)
    assert next_event(alice, "pixelmill.reply.alice.events")["request_id"] == "a-3"
    # Celery's built-in `celery.group` would republish any signature with options the sender chose, with the
    # intake's own broker user: into bob's queue (a job owned by bob) or into kombu's keys. The intake runs only
    # `pixelmill.submit`: the message is discarded as an unregistered task.
    smuggled = [
        dict(signature(TASK_SUBMIT, args=[request("a-g", "pixelmill.reply.alice.events")], queue=queue))
        for queue in ("pixelmill.intake.bob", "unacked_mutex")
    ]
    send(alice, "pixelmill.intake.alice", smuggled, task="celery.group", extra_args=[[["x", None], None], "g", []])
    send(alice, "pixelmill.intake.alice", request("a-4", "pixelmill.reply.bob.events"))
    send(bob, "pixelmill.intake.bob", request("b-1", "pixelmill.reply.bob.events"))
    assert next_event(bob, "pixelmill.reply.bob.events")["request_id"] == "b-1"
    send(alice, "pixelmill.intake.alice", request("a-5", "pixelmill.reply.alice.events"))
    assert next_event(alice, "pixelmill.reply.alice.events")["request_id"] == "a-5"  # a-4 was handled before it
    assert jobs(env) == {
        "a-1": owners["alice"].id,
        "a-3": owners["alice"].id,
        "b-1": owners["bob"].id,
        "a-5": owners["alice"].id,
    }
    assert redis.Redis.from_url(server.url).type("unacked_mutex") in (b"string", b"none")
    heard = redis.Redis.from_url(server.url).lrange("pixelmill.reply.bob.events", 0, -1)
    assert {json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]["request_id"] for m in heard} <= {"b-1"}

    # A tenant added while the intake runs is served once the intake has looked again; a revoked one is not.
    carol = tenants(env, "carol")["carol"]
    carol_url = acl_user(server, "carol")
    send(carol_url, "pixelmill.intake.carol", request("c-1", "pixelmill.reply.carol.events"))
    assert next_event(carol_url, "pixelmill.reply.carol.events", timeout=60)["request_id"] == "c-1"
    assert jobs(env)["c-1"] == carol.id
    # Revoked: its queue is no longer consumed, and what it sends then creates nothing.
    ledger = env.ledger()
    with ledger.session() as session:
        revoke_tenant(session, "carol")
    ledger.close()
    deadline = time.monotonic() + 60
    while "no longer consuming its intake queue" not in (env.data_dir / "intake-0.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, "the intake did not notice the revocation"
        time.sleep(0.1)
    send(carol_url, "pixelmill.intake.carol", request("c-2", "pixelmill.reply.carol.events"))
    send(alice, "pixelmill.intake.alice", request("a-6", "pixelmill.reply.alice.events"))
    assert next_event(alice, "pixelmill.reply.alice.events")["request_id"] == "a-6"
    assert "c-2" not in jobs(env)
    assert redis.Redis.from_url(server.url).llen("pixelmill.intake.carol") == 1  # left to the operator


def test_finding_4_source_outside_the_tenants_roots_reads_nothing(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer import request_v1
    from producer.source_roots import REFUSED

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.csv"
    secret.write_text("sku,password\nA,hunter2\n")
    (root / "escape.csv").symlink_to(secret)
    (root / "mine.csv").write_text("sku,title\nA-1,mug\n")
    owner = tenants(env, "alice", source_roots=(str(root), "s3://bucket/alice/"))["alice"]
    opened: list[str] = []
    real_open = request_v1.open_source

    def spy(settings: Any, source: str) -> Any:
        opened.append(source)
        return real_open(settings, source)

    monkeypatch.setattr(request_v1, "open_source", spy)
    settings, ledger = env.settings(), env.ledger()

    def attempt(source: str) -> list[str]:
        message = {**request(f"r-{len(opened)}-{uuid.uuid4().hex[:6]}", None), "source": source}
        del message["rows"]
        return request_v1.intake(settings, ledger, message, tenant=owner).problems

    refused = [
        str(secret),  # an existing file outside every root
        str(outside / "missing.csv"),  # a missing one: the same words, so no oracle
        str(root / "escape.csv"),  # a symlink inside the root that leads out of it
        f"{root}/../outside/secret.csv",  # `..`
        "secret.csv",  # relative: resolved against nothing
        "s3://bucket/bob/x.csv",  # an S3 key outside the prefix
        "s3://bucket/alice/../bob/x.csv",
        "s3://other/alice/x.csv",
        "s3://bucket/alicex/x.csv",  # a prefix is a folder, not a string prefix
    ]
    for source in refused:
        assert attempt(source) == [REFUSED], source  # nothing of the file (no header) in the answer
    assert opened == []  # nothing was read
    assert attempt(str(root / "mine.csv")) == []
    assert opened == [str(root / "mine.csv")]
    with ledger.session(readonly=True) as session:
        assert list(session.scalars(select(Job.tenant_id))) == [owner.id]
    ledger.close()
