"""The front door in one process: v1 requests through `intake`, the outbox written by the transitions, the
dispatcher against a real local webhook receiver (verifying Standard Webhooks signatures) and a real reply
queue on the embedded Redis. The end-to-end runs with real processes are in tests/test_frontdoor_e2e.py."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook

from conftest import DEFAULT_TENANT, Env
from contract import events, transitions
from contract.outbox import Dispatcher, backoff
from contract.queue import make_celery, queue_depth
from contract.schema import Delivery, Event, Item, Job, Tenant
from contract.tenants import find_tenant
from contract.transitions import Finish
from contract.webhook_target import WebhookUrlError, check_webhook_target
from pixelmill.api import Job as Job_
from producer.request_v1 import INTAKE_QUEUE, intake, request_schema

SECRET = "whsec_" + base64.b64encode(b"pixelmill-test-secret-0123456789").decode()
LOOPBACK = "127.0.0.1"  # the receivers below listen there: an internal receiver the operator allows
ROWS = [{"sku": "MUG-1", "title": "mug", "color": "red"}, {"sku": "MUG-2", "title": "cup", "color": "blue"}]


def request(rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "request_id": rid,
        "rows": ROWS,
        "key": "sku",
        "template": "studio photo of {title}, {color}",
        "options": {"size": "64x64", "steps": 4},
        **extra,
    }


def counts(env: Env) -> tuple[int, int]:
    ledger = env.ledger()
    try:
        with ledger.session(readonly=True) as session:
            return (
                session.scalar(select(func.count()).select_from(Job)) or 0,
                session.scalar(select(func.count()).select_from(Item)) or 0,
            )
    finally:
        ledger.close()


def all_events(env: Env) -> list[dict[str, Any]]:
    ledger = env.ledger()
    try:
        with ledger.session(readonly=True) as session:
            return list(session.scalars(select(Event.body).order_by(Event.id)))
    finally:
        ledger.close()


# --- the v1 request ---------------------------------------------------------------------------------------


def test_the_documented_schema_is_valid_json_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(request_schema())
    assert request_schema()["properties"]["v"] == {"const": 1, "description": "Message version."}


def test_same_request_id_three_times_is_one_job_and_its_events_again(env: Env) -> None:
    settings, ledger = env.settings(), env.ledger()
    results = [
        intake(settings, ledger, request("r-1", reply_to="pixelmill.reply.default.replies"), tenant=DEFAULT_TENANT)
        for _ in range(3)
    ]
    assert [r.status for r in results] == ["accepted", "duplicate", "duplicate"]
    assert {r.job for r in results} == {results[0].job}
    assert counts(env) == (1, 2)
    with ledger.session(readonly=True) as session:
        accepted = session.scalars(select(Event).where(Event.type == events.JOB_ACCEPTED)).all()
        assert len(accepted) == 1 and accepted[0].request_id == "r-1"
        delivery = session.scalars(select(Delivery)).one()  # re-sent: the same delivery, pending again
        assert (delivery.kind, delivery.target, delivery.state) == (
            "queue",
            "pixelmill.reply.default.replies",
            "pending",
        )
    ledger.close()


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"key": "id"}, "<rows>:1: field 'id': is missing"),
        ({"options": {"size": "65x64"}}, "request: field 'size': width 65 must be a multiple of 8"),
        ({"template": "photo of {title"}, "request: field 'template': bad template"),
        # an option's value: the message every door gives (make_request), not the JSON Schema's
        ({"options": {"steps": 0}}, "request: field 'steps': must be a whole number from 1 to 200, got 0"),
        ({"source": "/nowhere.csv"}, "request: give exactly one of 'rows'"),
        (
            {"webhook": "http://example.com/hook"},
            "request: field 'webhook': webhook 'http://example.com/hook' is plain http",
        ),
        (
            {"webhook": "https://169.254.169.254/latest/meta-data/"},
            "request: field 'webhook': webhook 'https://169.254.169.254/latest/meta-data/' resolves to "
            "169.254.169.254, a cloud metadata address: refused",
        ),
        ({"model": "no-such-model"}, "request: model 'no-such-model' does not exist: neither a local directory"),
        # lone surrogates: valid JSON ("\\ud800"), but no text a database takes
        ({"rows": [{"sku": "A", "title": "mug \ud800", "color": "red"}]}, "request: field 'rows.0.title': contains a"),
        ({"name": "night \udcff"}, "request: field 'name': contains a lone surrogate (U+DCFF)"),
        ({"rows": [{"sku": "A", "title": "mug", "color": "red", "\ud800": 1}]}, "request: field name 'rows.0.\\ud800'"),
    ],
)
def test_a_bad_request_is_rejected_with_problems_and_writes_nothing(
    env: Env, bad: dict[str, Any], problem: str
) -> None:
    settings, ledger = env.settings(), env.ledger()
    app = make_celery(settings)
    result = intake(
        settings, ledger, {**request("bad-1", reply_to="pixelmill.reply.default.replies"), **bad}, tenant=DEFAULT_TENANT
    )
    assert result.status == "rejected" and any(p.startswith(problem) for p in result.problems), result.problems
    assert counts(env) == (0, 0)
    assert queue_depth(app, env.queue) == 0 and queue_depth(app, "pixelmill.reply.default.replies") == 0
    [rejected] = all_events(env)
    assert rejected["type"] == "job.rejected" and rejected["job"] is None and rejected["request_id"] == "bad-1"
    assert rejected["data"]["problems"] == result.problems
    ledger.close()


def test_a_request_id_that_is_no_text_is_rejected_not_looked_up(env: Env) -> None:
    """The idempotency key is looked up and stored: one holding a lone surrogate is refused like any bad field
    (the rejection keyed by the message, not by that id), never raised on (a poison message redelivered)."""
    result = intake(
        env.settings(),
        env.ledger(),
        request("r-\ud800", reply_to="pixelmill.reply.default.replies"),
        tenant=DEFAULT_TENANT,
    )
    assert result.status == "rejected" and result.problems[0].startswith("request: field 'request_id': contains a")
    assert counts(env) == (0, 0)
    [rejected] = all_events(env)
    assert rejected["type"] == "job.rejected" and rejected["request_id"] is None


def test_a_message_that_is_not_even_a_request_is_rejected(env: Env) -> None:
    result = intake(env.settings(), env.ledger(), ["not", "an", "object"], tenant=DEFAULT_TENANT)
    assert result.status == "rejected" and result.problems
    assert counts(env) == (0, 0)


def test_webhook_urls() -> None:
    """Public https passes; loopback and private receivers (http or not) only through the operator's allow-list.
    The addresses of the attacks are in tests/test_webhook_security.py."""
    public = {"hooks.example.com": ["93.184.215.14"]}

    def check(url: str, allow_http: bool = False, allow_hosts: str = "") -> str:
        return check_webhook_target(
            url, allow_http=allow_http, allow_hosts=allow_hosts, resolve=lambda host, _: public[host]
        ).address

    assert check("https://hooks.example.com/x") == "93.184.215.14"
    assert check("http://127.0.0.1:9/x", allow_hosts="127.0.0.1") == "127.0.0.1"
    assert check("http://[::1]:9/x", allow_hosts="[::1]:9") == "::1"
    assert check("http://10.0.0.5/x", allow_hosts="10.0.0.0/8") == "10.0.0.5"
    refused = ["http://127.0.0.1:9/x", "http://[::1]:9/x", "http://10.0.0.5/x", "ftp://x/y", "https://"]
    for url in [*refused, "javascript:alert(1)", "http://hooks.example.com/x"]:
        with pytest.raises(WebhookUrlError):
            check(url)
    with pytest.raises(WebhookUrlError):
        check("http://10.0.0.5/x", allow_http=True)  # plain http is allowed; the private address is not


# --- events written by the transitions --------------------------------------------------------------------


def test_job_finished_once_in_the_transaction_of_the_last_item_with_item_events(env: Env) -> None:
    settings, ledger = env.settings(), env.ledger()
    result = intake(
        settings,
        ledger,
        request("r-items", reply_to="pixelmill.reply.default.replies", events=["item.succeeded", "item.failed"]),
        tenant=DEFAULT_TENANT,
    )
    assert result.job is not None
    with ledger.session() as session:
        ids = list(session.scalars(select(Item.id).where(Item.job_id == result.job).order_by(Item.id)))
        transitions.claim(session, result.job, ids, node="t", lease_seconds=60, max_attempts=3)
    with ledger.session() as session:
        transitions.finish(session, ids[0], Finish(image=None, candidates=()))
        transitions.finish(session, ids[0], Finish(image=None, candidates=()))  # a second finish: no new event
    assert [e["type"] for e in all_events(env)] == ["job.accepted", "item.succeeded"]
    with ledger.session() as session:
        transitions.fail(session, ids[1], "out of memory", node="t", max_attempts=3, final=True)
    bodies = all_events(env)
    assert [e["type"] for e in bodies] == ["job.accepted", "item.succeeded", "item.failed", "job.finished"]
    finished = bodies[-1]
    assert finished["data"]["counts"] == {"succeeded": 1, "blocked": 0, "failed": 1, "skipped": 0}
    assert finished["data"]["failed_keys"] == ["MUG-2"]
    assert finished["data"]["manifest"]["cli"] == f"pixelmill manifest --job {result.job}"
    assert {e["request_id"] for e in bodies} == {"r-items"} and len({e["id"] for e in bodies}) == 4
    assert set(finished) == {"v", "type", "id", "request_id", "job", "catalogue", "created_at", "data"}
    with ledger.session() as session:  # settling again finds it there: exactly once
        assert events.settle(session, [result.job]) == []
    ledger.close()


def test_a_job_with_nothing_to_generate_is_finished_at_once(env: Env) -> None:
    settings, ledger = env.settings(), env.ledger()
    first = intake(settings, ledger, request("r-a"), tenant=DEFAULT_TENANT)
    assert first.job is not None
    with ledger.session() as session:
        ids = list(session.scalars(select(Item.id).where(Item.job_id == first.job)))
        transitions.claim(session, first.job, ids, node="t", lease_seconds=60, max_attempts=3)
        for item_id in ids:
            transitions.finish(session, item_id, Finish(image=None, candidates=()))
    second = intake(settings, ledger, request("r-b"), tenant=DEFAULT_TENANT)  # the same work: every item skipped
    types = [(e["type"], e["job"]) for e in all_events(env)]
    assert types == [
        ("job.accepted", first.job),
        ("job.finished", first.job),
        ("job.accepted", second.job),
        ("job.finished", second.job),
    ]
    ledger.close()


# --- delivery ---------------------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on loopback: answers the statuses in `script` in turn (then 200) and records every
    request with whether its signature verified against the shared secret."""

    def __init__(self, script: list[int] | None = None, stall: float = 0.0) -> None:
        self.script = list(script or [])
        self.stall = stall
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.stall and not receiver.received:
                    receiver.received.append({"stalled": True})
                    time.sleep(receiver.stall)
                    return
                try:
                    event = Webhook(SECRET).verify(body, dict(self.headers))
                    verified = True
                except Exception:  # noqa: BLE001
                    event, verified = json.loads(body), False
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.received.append(
                    {"event": event, "verified": verified, "status": status, "id": self.headers["webhook-id"]}
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500, 500])
    yield r
    r.close()


def test_webhook_500_twice_then_200_is_signed_and_delivered_once(env: Env, receiver: Receiver) -> None:
    settings = env.settings(webhook_secret=SECRET, webhook_backoff=0.05, webhook_allow_hosts=LOOPBACK)
    ledger = env.ledger()
    result = intake(settings, ledger, request("r-hook", webhook=receiver.url), tenant=DEFAULT_TENANT)
    assert result.status == "accepted"
    dispatcher = Dispatcher(settings, ledger)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r["status"] == 200 for r in receiver.received):
        dispatcher.run_once()
        time.sleep(0.05)
    for _ in range(5):  # nothing left to send
        assert dispatcher.run_once().total == 0
    assert [r["status"] for r in receiver.received] == [500, 500, 200]
    assert all(r["verified"] for r in receiver.received)
    assert {r["id"] for r in receiver.received} == {receiver.received[0]["event"]["id"]}
    assert receiver.received[-1]["event"]["type"] == "job.accepted"
    with ledger.session(readonly=True) as session:
        delivery = session.scalars(select(Delivery)).one()
        assert (delivery.state, delivery.attempts, delivery.kind) == ("delivered", 3, "webhook")
        assert delivery.delivered_at is not None
    ledger.close()


def test_a_webhook_that_keeps_failing_is_dead_lettered_and_resent_on_demand(env: Env) -> None:
    receiver = Receiver([500] * 100)
    try:
        settings = env.settings(
            webhook_secret=SECRET, webhook_backoff=0.01, webhook_retry_period=0.5, webhook_allow_hosts=LOOPBACK
        )
        ledger = env.ledger()
        intake(settings, ledger, request("r-dead", webhook=receiver.url), tenant=DEFAULT_TENANT)
        dispatcher = Dispatcher(settings, ledger)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not dispatcher.run_once().dead:
            time.sleep(0.05)
        proc = env.cli("events", "--json")
        [listed] = json.loads(proc.stdout)
        assert listed["state"] == "dead" and listed["last_error"].startswith("HTTP 500")
        receiver.script = []
        env.vars["PIXELMILL_WEBHOOK_SECRET"] = SECRET
        env.vars["PIXELMILL_WEBHOOK_ALLOW_HOSTS"] = LOOPBACK
        env.cli("events", "--resend-all")
        env.cli("events", "--dispatch")
        assert receiver.received[-1]["status"] == 200 and receiver.received[-1]["verified"]
        assert json.loads(env.cli("events", "--json").stdout) == []
    finally:
        receiver.close()


def test_backoff_grows_with_jitter_and_a_cap(env: Env) -> None:
    settings = env.settings(webhook_backoff=1.0, webhook_backoff_max=10.0)
    first = [backoff(settings, 1) for _ in range(50)]
    assert all(0.5 <= d <= 1.0 for d in first) and len(set(first)) > 1
    assert all(1.0 <= backoff(settings, 2) <= 2.0 for _ in range(20))
    assert all(2.0 <= backoff(settings, 3) <= 4.0 for _ in range(20))
    assert all(5.0 <= backoff(settings, 30) <= 10.0 for _ in range(20))


DISPATCH_ONCE = """
import sys
from contract.ledger import Ledger
from contract.outbox import Dispatcher
from contract.settings import get_settings
settings = get_settings()
print("dispatching", flush=True)
Dispatcher(settings, Ledger(settings)).run_once()
"""


def test_a_dispatcher_killed_before_delivery_delivers_on_restart(env: Env) -> None:
    """The event is committed; the dispatcher that leased it is SIGKILLed while the POST is in flight (the
    receiver stalls on it). The next dispatcher, once the lease ran out, delivers it and marks it once."""
    receiver = Receiver(stall=30)
    try:
        settings = env.settings(webhook_secret=SECRET, webhook_allow_hosts=LOOPBACK)
        ledger = env.ledger()
        intake(settings, ledger, request("r-kill", webhook=receiver.url), tenant=DEFAULT_TENANT)
        vars_ = {
            **env.vars,
            "PIXELMILL_WEBHOOK_SECRET": SECRET,
            "PIXELMILL_WEBHOOK_ALLOW_HOSTS": LOOPBACK,
            "PIXELMILL_DISPATCH_LEASE": "2",
            "PIXELMILL_WEBHOOK_TIMEOUT": "1",  # the lease must be at least twice one attempt's deadline
            "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).parent.parent)),
        }
        proc = subprocess.Popen([sys.executable, "-c", DISPATCH_ONCE], env=vars_, start_new_session=True)
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.received == [{"stalled": True}]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with ledger.session(readonly=True) as session:
            assert session.scalars(select(Delivery.state)).one() == "pending"
        time.sleep(2.2)  # the dead dispatcher's lease
        subprocess.run([sys.executable, "-c", DISPATCH_ONCE], env=vars_, check=True, timeout=60)
        delivered = [r for r in receiver.received if "event" in r]
        assert len(delivered) == 1 and delivered[0]["verified"] and delivered[0]["event"]["type"] == "job.accepted"
        with ledger.session(readonly=True) as session:
            assert session.scalars(select(Delivery.state)).one() == "delivered"
        ledger.close()
    finally:
        receiver.close()


def test_events_go_to_the_reply_queue_as_pixelmill_event_tasks(env: Env) -> None:
    from kombu import Connection, Queue

    settings, ledger = env.settings(), env.ledger()
    intake(settings, ledger, request("r-q", reply_to="pixelmill.reply.default.q"), tenant=DEFAULT_TENANT)
    intake(
        settings,
        ledger,
        {**request("r-bad", reply_to="pixelmill.reply.default.q"), "options": {"size": "1x1"}},
        tenant=DEFAULT_TENANT,
    )
    assert Dispatcher(settings, ledger).run_once().delivered == 2
    got: list[tuple[str, dict[str, Any]]] = []
    with Connection(make_celery(settings).conf.broker_url) as conn:
        with conn.SimpleQueue(Queue("pixelmill.reply.default.q")) as queue:
            for _ in range(2):
                message = queue.get(timeout=10)
                args = message.payload[0] if isinstance(message.payload, list) else message.payload
                got.append((message.headers["task"], args[0]))
                message.ack()
    assert [(task, body["type"], body["request_id"]) for task, body in got] == [
        ("pixelmill.event", "job.accepted", "r-q"),
        ("pixelmill.event", "job.rejected", "r-bad"),
    ]
    assert INTAKE_QUEUE == "pixelmill.intake"
    ledger.close()


def test_a_source_on_s3_is_read_with_the_configured_settings(
    tmp_path: Path, tiny_model: Path, test_servers: Any
) -> None:
    """`source: s3://bucket/key.csv` through boto3 with PIXELMILL_S3_* (a moto server on loopback)."""
    from contract.storage import S3Storage

    env = Env(tmp_path / "data", tiny_model, test_servers.backend("sqlite-embedded-s3"))
    env.data_dir.mkdir()
    try:
        settings = env.settings()
        bucket = settings.storage_url.removeprefix("s3://").split("/")[0]  # type: ignore[union-attr]
        csv = "sku,title,color\nS3-1,mug,red\nS3-2,cup,blue\n"
        S3Storage(bucket, "", settings).client.put_object(Bucket=bucket, Key="in/cat.csv", Body=csv.encode())
        with env.ledger().session() as session:  # the operator lets the tenant read s3://bucket/in/
            session.execute(update(Tenant).where(Tenant.name == "default").values(source_roots=[f"s3://{bucket}/in/"]))
        with env.ledger().session() as session:
            tenant = find_tenant(session, "default")
        assert tenant is not None
        message = {k: v for k, v in request("r-s3").items() if k != "rows"}
        result = intake(settings, env.ledger(), {**message, "source": f"s3://{bucket}/in/cat.csv"}, tenant=tenant)
        assert result.status == "accepted", result.problems
        assert counts(env) == (1, 2)
        missing = intake(
            settings,
            env.ledger(),
            {**message, "request_id": "r-s3-missing", "source": f"s3://{bucket}/in/nope.csv"},
            tenant=tenant,
        )
        assert missing.status == "rejected" and missing.problems[0].startswith(
            f"request: field 'source': cannot read s3://{bucket}/in/nope.csv"
        )
    finally:
        env.close()


def test_a_model_no_worker_could_load_is_refused_by_every_door(env: Env) -> None:
    """The check the CLI did on its own now lives in submit_request: the CLI, the Python API and the intake
    all refuse, with the same message, before anything is written."""
    from conftest import write_catalogue
    from pixelmill.api import Client, SubmitError

    catalogue = write_catalogue(env.data_dir / "c.csv", 2)
    proc = env.cli(
        "submit", str(catalogue), "--key", "sku", "--template", "photo of {title}", "--model", "nosuch", check=False
    )
    assert proc.returncode == 2 and "model 'nosuch' does not exist: neither a local directory" in proc.stderr
    with Client(env.settings()) as client, pytest.raises(SubmitError) as refused:
        client.submit(rows=ROWS, key="sku", template="photo of {title}", model="nosuch")
    assert refused.value.problems[0].startswith("request: model 'nosuch' does not exist: neither a local directory")
    result = intake(env.settings(), env.ledger(), {**request("r-model"), "model": "nosuch"}, tenant=DEFAULT_TENANT)
    assert result.problems == refused.value.problems
    assert counts(env) == (0, 0)


def test_python_api_problems_status_items_and_a_wait_that_times_out(env: Env) -> None:
    from pixelmill.api import Client, SubmitError

    with Client(env.settings()) as client:
        with pytest.raises(SubmitError) as bad:
            client.submit(
                rows=[{"sku": "A", "title": "mug"}, {"title": "no key"}],
                key="sku",
                template="photo of {title}",
                size="64x64",
            )
        assert bad.value.problems == ["<rows>:2: field 'sku': is missing"]
        job = client.submit(
            rows=ROWS, key="sku", template="photo of {title}", size="64x64", steps=4, request_id="api-1"
        )
        again = client.submit(
            rows=ROWS, key="sku", template="photo of {title}", size="64x64", steps=4, request_id="api-1"
        )
        assert again.id == job.id
        seen: list[int] = []
        with pytest.raises(TimeoutError, match="is a worker running for model"):
            job.wait(timeout=0.3, interval=0.1, progress=lambda s: seen.append(s.pending))
        assert seen and seen[-1] == 2  # the backlog: no worker, so no scheduler sent them
        assert [i.key for i in job.items(state="pending")] == ["MUG-1", "MUG-2"] and job.items(state="failed") == []
        assert [e["type"] for e in job.events()] == ["job.accepted"]
        assert client.job(job.id).status().total == 2


def test_python_api_cancel_retry_and_manifest(env: Env) -> None:
    """No worker: items stay queued. Cancel settles the job (its job.finished event); items failed by hand are
    retried (queued again, attempts from 0); manifests stream one row per item or catalogue entry."""
    from sqlalchemy import update

    from contract.schema import State
    from pixelmill.api import Client, ManifestError, UnknownJob

    with Client(env.settings()) as client:
        job = client.submit(
            rows=ROWS,
            key="sku",
            template="photo of {title}",
            size="64x64",
            steps=4,
            request_id="api-cancel",
            catalogue="api-shop",
        )
        rows = list(job.manifest())
        assert [(r.key, r.state, r.change, r.job) for r in rows] == [
            ("MUG-1", "pending", "", job.id),
            ("MUG-2", "pending", "", job.id),
        ]
        assert [(r.key, r.change) for r in client.manifest(catalogue="api-shop")] == [
            ("MUG-1", "new"),
            ("MUG-2", "new"),
        ]
        with pytest.raises(ManifestError, match="no catalogue"):
            next(client.manifest(catalogue="nosuch"))
        result = job.cancel()
        assert (result.pending, result.cancelled) == (2, 2)
        status = job.status()
        assert status.cancelled == 2 and status.finished
        assert [e["type"] for e in job.events()] == ["job.accepted", "job.finished"]
        finished = job.events()[-1]["data"]["counts"]
        assert finished["cancelled"] == 2, finished
        assert job.cancel().cancelled == 0 and len(job.events()) == 2  # exactly once
        assert [r.change for r in client.manifest(catalogue="api-shop")] == ["cancelled", "cancelled"]

        again = client.submit(
            rows=ROWS, key="sku", template="photo of {title}", size="64x64", steps=4, request_id="api-retry"
        )
        with client.ledger.session() as session:
            session.execute(
                update(Item)
                .where(Item.job_id == again.id)
                .values(state=State.failed, attempts=3, error="Traceback ...\nOSError: disk full")
            )
        assert [r.error for r in again.manifest()] == ["OSError: disk full"] * 2
        assert again.retry(blocked_by="image") == 2
        assert [(i.state, i.attempts) for i in again.items()] == [("pending", 0)] * 2  # for the scheduler
        assert again.retry() == 0
        with pytest.raises(ValueError, match="nothing to retry"):
            again.retry(failed=False)
        for call in (
            lambda: client.job(999).cancel(),
            lambda: Job_(client, 999).cancel(),
            lambda: Job_(client, 999).retry(),
        ):
            with pytest.raises(UnknownJob):
                call()
        with pytest.raises(ManifestError, match="no job 999"):
            list(Job_(client, 999).manifest())


def test_the_http_manifest_streams_in_chunks_and_stops_when_the_client_goes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`manifest_chunks` hands the writer's output over in bounded chunks; closing the response (a client that
    went away) ends the writer's thread and its session."""
    from pixelmill.api import Client
    from pixelmill.api import manifest_routes as api_http

    monkeypatch.setattr(api_http, "_CHUNK", 512)
    rows = [{"sku": f"S-{n:04d}", "title": "mug", "color": "red"} for n in range(400)]
    with Client(env.settings()) as client:
        job = client.submit(rows=rows, key="sku", template="photo of {title}", size="64x64", request_id="stream")
        whole = b"".join(api_http.manifest_chunks(client.ledger, job.id, "jsonl", tenant_id=DEFAULT_TENANT.id))
        assert [json.loads(line)["key"] for line in whole.splitlines()] == [r["sku"] for r in rows]
        chunks = api_http.manifest_chunks(client.ledger, job.id, "csv", tenant_id=DEFAULT_TENANT.id)
        assert isinstance(chunks, Generator)  # closed below, as a client that goes away closes it
        first = next(chunks)
        assert first.startswith(b"key,variant,change,state,") and len(first) < 4096
        chunks.close()
        deadline = time.monotonic() + 10
        while any(t.name == f"manifest-{job.id}" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the manifest writer did not stop"
            time.sleep(0.05)


def test_an_unexpected_intake_error_is_still_answered(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the intake (not the request) ends in a job.rejected naming it, never in silence."""
    from producer import request_v1

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(request_v1, "submit_v1", broken)
    settings, ledger = env.settings(), env.ledger()
    try:
        request_v1.intake(settings, ledger, request("r-bug"), tenant=DEFAULT_TENANT)
    except RuntimeError as exc:
        result = request_v1.answer_failure(settings, ledger, request("r-bug"), exc, tenant=DEFAULT_TENANT)
    assert result.status == "rejected" and "RuntimeError: boom" in result.problems[0]
    assert [e["type"] for e in all_events(env)] == ["job.rejected"] and counts(env) == (0, 0)
    ledger.close()
