"""Intake messages that once stopped or bloated the intake, on the embedded Redis with a running `pixelmill intake`
(issue 22: findings 1, 9 and 13): each is refused harmlessly, answered with `job.rejected` where it names a reply
queue the tenant may use, and the intake (and a worker) go on with the honest requests behind it."""

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
from test_intake_tenants import jobs, request, send

from conftest import Env
from contract.queue import make_celery

REPLIES = "pixelmill.reply.default.events"


@pytest.fixture
def small_env(tmp_path: Path, tiny_model: Path) -> Iterator[Env]:
    """The embedded defaults with a 256 KiB intake cap (so the broker's cap is its 1 MiB floor)."""
    installation = Env(tmp_path / "data", tiny_model, {"PIXELMILL_INTAKE_MAX_MESSAGE_BYTES": str(256 * 1024)})
    installation.data_dir.mkdir()
    yield installation
    installation.close()


def broker(env: Env) -> tuple[str, redis.Redis]:
    """The Celery URL of the embedded broker, and an admin client on its socket."""
    url = str(make_celery(env.settings()).conf.broker_url)
    return url, redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"), socket_timeout=10)


def events(client: redis.Redis, want: dict[str, str], timeout: float = 180) -> dict[str, dict[str, Any]]:
    """Events from the reply queue until every (request_id or problem fragment) -> type in `want` has come."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while set(want) - set(got):
        assert time.monotonic() < deadline, f"still waiting for {set(want) - set(got)}; got {sorted(got)}"
        popped = client.brpop([REPLIES], timeout=5)
        if popped is None:
            continue
        event = json.loads(base64.b64decode(json.loads(popped[1])["body"]))[0][0]
        for key, type_ in want.items():
            problems = " ".join(event["data"].get("problems", ()))
            if event["type"] == type_ and (
                event["request_id"] == key or (event["request_id"] is None and key in problems)
            ):
                got[key] = event
    return got


def raw_task(client: redis.Redis, url: str, body: bytes) -> None:
    """Push a `pixelmill.submit` task whose body is exactly `body` (what no Celery client would encode) onto the
    intake queue: a real envelope, its body swapped."""
    scratch = f"scratch.{uuid.uuid4().hex}"
    send(url, scratch, {"placeholder": True})
    popped = client.rpop(scratch)
    assert isinstance(popped, bytes)
    envelope = json.loads(popped)
    envelope["body"] = base64.b64encode(body).decode()
    client.lpush("pixelmill.intake", json.dumps(envelope))


def honest(rid: str) -> dict[str, Any]:
    return {**request(rid, REPLIES), "rows": [{"sku": rid, "title": f"mug {rid}"}]}


def test_finding_1_reply_to_a_kombu_internal_key_is_refused_and_every_consumer_keeps_running(env: Env) -> None:
    url, client = broker(env)
    intake, worker = env.start("intake"), env.start_worker()
    for rid, name in [("evil-1", "unacked"), ("evil-2", "_kombu.binding.pixelmill.intake"), ("evil-3", "celery")]:
        send(url, "pixelmill.intake", request(rid, name))
    for rid in ("h-1", "h-2", "h-3"):
        send(url, "pixelmill.intake", honest(rid))
    events(client, {"h-1": "job.finished", "h-2": "job.finished", "h-3": "job.finished"})
    assert set(jobs(env)) == {"h-1", "h-2", "h-3"}  # every honest request done, the evil ones wrote nothing
    assert client.type("unacked") in (b"hash", b"none")  # kombu's bookkeeping untouched
    assert client.type("_kombu.binding.pixelmill.intake") in (b"set", b"none")
    assert client.type("celery") == b"none"
    assert intake.poll() is None and worker.poll() is None  # both still running


def test_the_dispatcher_refuses_an_internal_reply_queue_whoever_wrote_it(env: Env) -> None:
    """Defence in depth: a delivery row naming `unacked` (written before the rule, or by a buggy door) is never
    published; it is recorded as dead at once (retrying cannot make the name allowed)."""
    from contract import events as outbox_events
    from contract.outbox import Dispatcher
    from contract.tenants import DEFAULT_TENANT_ID

    url, client = broker(env)
    ledger = env.ledger()
    with ledger.session() as session:
        notify = outbox_events.Notify(reply_to="unacked", events=outbox_events.JOB_EVENTS)
        outbox_events.emit(
            session,
            type_=outbox_events.JOB_REJECTED,
            scope="old",
            request_id="old",
            notify=notify,
            data={},
            tenant_id=DEFAULT_TENANT_ID,
        )
    outcome = Dispatcher(env.settings(), ledger).run_once()
    assert (outcome.delivered, outcome.retrying, outcome.dead) == (0, 0, 1)
    assert client.type("unacked") in (b"hash", b"none")
    ledger.close()


def test_finding_9_an_oversized_intake_message_is_refused_before_decoding(small_env: Env) -> None:
    env = small_env
    url, client = broker(env)
    intake = env.start("intake")
    big = {**request("big-1", REPLIES), "rows": [{"sku": "A", "title": "x" * (3 * 1024 * 1024)}]}
    with pytest.raises(Exception):  # noqa: B017,PT011 (the broker closes the connection: kombu or redis error)
        send(url, "pixelmill.intake", big, retry=False)  # over the broker's cap: refused at the socket
    middling = {**request("mid-1", REPLIES), "rows": [{"sku": "A", "title": "x" * (400 * 1024)}]}
    send(url, "pixelmill.intake", middling)  # under the broker's cap, over the intake's: refused unread
    send(url, "pixelmill.intake", honest("after-9"))
    got = events(client, {"PIXELMILL_INTAKE_MAX_MESSAGE_BYTES": "job.rejected", "after-9": "job.accepted"})
    [problem] = got["PIXELMILL_INTAKE_MAX_MESSAGE_BYTES"]["data"]["problems"]
    assert problem.startswith("request: the message is ") and "PIXELMILL_INTAKE_MAX_MESSAGE_BYTES (262144)" in problem
    assert set(jobs(env)) == {"after-9"}
    assert intake.poll() is None


def test_finding_13_deep_json_and_a_wrong_argument_count_are_answered_with_job_rejected(small_env: Env) -> None:
    from celery import Celery

    env = small_env
    url, client = broker(env)
    intake = env.start("intake")
    deep = b'[[{"v": 1, "reply_to": "%s", "rows": ' % REPLIES.encode() + b"[" * 3000 + b"]" * 3000 + b"}], {}, {}]"
    raw_task(client, url, deep)
    client.lpush("pixelmill.intake", b"not a kombu envelope")  # nobody to answer: dropped, the intake goes on
    sender = Celery(broker=url, set_as_current=False)
    sender.send_task("pixelmill.submit", args=[honest("two-args"), "extra"], queue="pixelmill.intake")
    sender.send_task("pixelmill.submit", args=[], kwargs={"request": honest("kw")}, queue="pixelmill.intake")
    sender.close()
    send(url, "pixelmill.intake", honest("after-13"))
    got = events(
        client,
        {
            "PIXELMILL_INTAKE_MAX_DEPTH": "job.rejected",
            "(got 2 arguments and 0 keyword arguments)": "job.rejected",
            "(got 0 arguments and 1 keyword arguments)": "job.rejected",
            "after-13": "job.accepted",
        },
    )
    assert len(got) == 4
    assert set(jobs(env)) == {"after-13"}
    assert intake.poll() is None


@pytest.mark.parametrize(
    ("raw", "deep", "reply_to"),
    [
        (b'[[{"reply_to": "q", "rows": [{"a": "[[[[[[[[[["}]}], {}, {}]', 5, "q"),  # brackets in a string count nothing
        (b'[[{"rows": [{"reply_to": "inner"}], "x": "\\"reply_to\\": \\"no\\""}], {}, {}]', 5, None),  # not top level
        (b'[[{"a": 1}], {"reply_to": "kw"}, {}]', 3, None),  # only the first argument is the request
        (b'[1, [{"reply_to": "q"}]]', 3, None),  # not protocol 2
        (b'[[{"reply_to": "' + b"x" * 500 + b'"}], {}, {}]', 3, None),  # longer than any reply queue
    ],
)
def test_depth_and_reply_to_are_read_from_raw_bytes(raw: bytes, deep: int, reply_to: str | None) -> None:
    from producer.message_bounds import depth, reply_to_of

    assert depth(raw, 64) == deep
    assert reply_to_of(raw) == reply_to
