"""Issue 22, findings 5, 8 and 12: each attack on the webhook dispatcher reproduced against the real dispatcher
and real HTTP receivers on loopback, and shown to fail harmlessly (nothing reaches the internal address, a slow
or huge answer costs one bounded attempt, no second delivery, no secret in the logs)."""

from __future__ import annotations

import base64
import datetime
import io
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from conftest import DEFAULT_TENANT
from contract import events, logs
from contract.events import Notify
from contract.ledger import Ledger, make_engine, upgrade
from contract.outbox import Dispatcher
from contract.schema import Delivery
from contract.settings import Settings
from contract.tenants import DEFAULT_TENANT_ID, add_tenant
from contract.webhook_target import WebhookResolveError, WebhookUrlError, check_webhook_target
from producer.request import RequestProblems
from producer.request_v1 import validate_v1

SECRET = "whsec_" + base64.b64encode(b"pixelmill-test-secret-0123456789").decode()
LOOPBACK = "127.0.0.1"


class _QuietServer(ThreadingHTTPServer):
    """A peer hanging up mid-answer (the dispatcher cutting a huge or slow reply) is expected here, not an error
    to print; anything else still is."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    """A webhook endpoint on 127.0.0.1. `mode`: `ok` answers `status`; `hang` reads the request and never
    answers; `trickle` sends its status line one byte every 0.2 s; `huge` answers 500 with a 300 MB body."""

    def __init__(self, mode: str = "ok", status: int = 200, tls: ssl.SSLContext | None = None) -> None:
        self.mode, self.status = mode, status
        self.received: list[dict[str, Any]] = []
        self.sent = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append({"path": self.path, "host": self.headers["host"], "at": time.monotonic()})
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                    self.close_connection = True
                elif receiver.mode == "trickle":
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        if receiver.release.wait(0.2):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                elif receiver.mode == "huge":
                    self.send_response(500)
                    self.send_header("content-length", str(300 * 1024 * 1024))
                    self.end_headers()
                    chunk = b"x" * 65536
                    while receiver.sent < 300 * 1024 * 1024:
                        self.wfile.write(chunk)  # BrokenPipe once the dispatcher hangs up
                        receiver.sent += len(chunk)
                else:
                    self.send_response(receiver.status)
                    self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = _QuietServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{LOOPBACK}:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*args: Any, **kwargs: Any) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_allow_hosts": LOOPBACK,
        "webhook_timeout": 1.0,
        "dispatch_lease": 3.0,
        "dispatch_interval": 0.05,
        "webhook_backoff": 60.0,
    }
    return Settings(data_dir=tmp_path, **{**values, **overrides})


def add_event(ledger: Ledger, url: str, scope: str = "r-1", tenant_id: int = DEFAULT_TENANT_ID) -> None:
    """A committed event with a webhook delivery, as a request accepted before its target went bad would leave."""
    with ledger.session() as session:
        events.emit(
            session,
            type_=events.JOB_REJECTED,
            scope=scope,
            request_id=scope,
            data={},
            notify=Notify(webhook=url),
            tenant_id=tenant_id,
        )


def deliveries(ledger: Ledger) -> list[Delivery]:
    with ledger.session(readonly=True) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


# --- finding 5: server-side request forgery ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("https://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("https://10.0.0.5/hook", "a private address"),
        ("https://metadata.google.internal/computeMetadata/v1/", "names a cloud metadata service"),
        ("https://user:pass@hooks.example.com/x", "has a user name or password"),
        ("http://127.0.0.1:8080/v1/jobs/1/cancel", "is plain http"),
        ("https://127.0.0.1:8080/v1/jobs/1/cancel", "a loopback address"),
        ("https://[::ffff:169.254.169.254]/", "a cloud metadata address"),
        ("https://[::ffff:10.0.0.5]/", "a private address"),
        ("https://[::1]/", "a loopback address"),
        ("https://0.0.0.0/", "an unspecified address"),
        ("https://224.0.0.1/", "a multicast address"),
        ("https://240.0.0.1/", "a reserved address"),
        ("https://100.64.0.1/", "not a public address"),
        ("https://2130706433/", "a loopback address"),  # 127.0.0.1 in decimal: the resolver reads it so
        ("https://localhost/", "a loopback address"),
    ],
)
def test_finding_5_webhook_to_internal_addresses_is_refused_at_submit(tmp_path: Path, url: str, why: str) -> None:
    settings = settings_for(tmp_path, webhook_allow_hosts="")
    message = {"v": 1, "request_id": "r", "rows": [{"k": "a"}], "key": "k", "template": "{k}", "webhook": url}
    with pytest.raises(RequestProblems) as problems:
        validate_v1(settings, message, DEFAULT_TENANT)
    [line] = problems.value.problems
    assert line.startswith("request: field 'webhook': webhook ") and why in line, line
    assert "pass" not in line.replace("password", "")


def test_finding_5_webhook_to_metadata_address_is_refused(tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    """The chained attack: a webhook at the tokenless loopback API's cancel route. A delivery that got into the
    ledger (accepted before, or a name that pointed elsewhere at submit) is checked again and never sent."""
    api = receivers()
    ledger = Ledger(settings_for(tmp_path))
    add_event(ledger, f"http://{LOOPBACK}:{api.port}/v1/jobs/1/cancel", "cancel")
    add_event(ledger, "https://169.254.169.254/latest/meta-data/", "metadata")
    # Even with plain http allowed (a private network), loopback is reached only through the allow-list.
    outcome = Dispatcher(settings_for(tmp_path, webhook_allow_hosts="", webhook_allow_http=True), ledger).run_once()
    assert (outcome.dead, outcome.delivered, outcome.retrying) == (2, 0, 0)
    assert api.received == []
    errors = [d.last_error or "" for d in deliveries(ledger)]
    assert errors[0].startswith("refused: ") and "a loopback address" in errors[0]
    assert "a cloud metadata address" in errors[1]
    assert [d.state for d in deliveries(ledger)] == ["dead", "dead"]  # not retried forever


def test_finding_5_dns_rebinding_after_submit_is_refused_at_delivery(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """The name resolved to a public address when the request came in and to loopback when it is delivered."""
    api = receivers()
    answers = iter([["93.184.215.14"], [LOOPBACK]])
    resolve = lambda host, port: next(answers)  # noqa: E731
    url = f"https://rebind.example:{api.port}/v1/jobs/1/cancel"
    settings = settings_for(tmp_path, webhook_allow_hosts="")
    assert check_webhook_target(url, allow_http=False, allow_hosts="", resolve=resolve).address == "93.184.215.14"
    ledger = Ledger(settings)
    add_event(ledger, url)
    assert Dispatcher(settings, ledger, resolve=resolve).run_once().dead == 1
    assert api.received == []
    assert "resolves to 127.0.0.1, a loopback address" in (deliveries(ledger)[0].last_error or "")


def test_finding_5_the_checked_address_is_the_one_connected_to(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """One lookup per attempt, and the POST goes to its answer: `hooks.internal` exists in no DNS, so only a
    connection to the checked address can deliver; the receiver still sees its own name in Host."""
    receiver = receivers()
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return [LOOPBACK]

    settings = settings_for(tmp_path, webhook_allow_hosts="hooks.internal")
    ledger = Ledger(settings)
    add_event(ledger, f"http://hooks.internal:{receiver.port}/hook")
    assert Dispatcher(settings, ledger, resolve=resolve).run_once().delivered == 1
    assert lookups == ["hooks.internal"]
    assert receiver.received[0]["host"] == f"hooks.internal:{receiver.port}"


def test_a_tenants_webhook_hosts_narrowed_after_submit_are_applied_at_delivery(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """The operator limits a tenant to its own receivers; an event written before that is not sent elsewhere."""
    receiver = receivers()
    settings = settings_for(tmp_path, webhook_allow_hosts="hooks.internal")
    ledger = Ledger(settings)
    with ledger.session() as session:
        shop, _ = add_tenant(session, "shop", webhook_hosts=["hooks.shop.internal"], with_token=False)
    add_event(ledger, f"http://hooks.internal:{receiver.port}/hook", tenant_id=shop.id)
    add_event(ledger, f"http://hooks.internal:{receiver.port}/hook", scope="r-2")  # the default tenant: any host
    outcome = Dispatcher(settings, ledger, resolve=lambda host, port: [LOOPBACK]).run_once()
    assert (outcome.delivered, outcome.dead) == (1, 1)
    assert len(receiver.received) == 1
    refused = [d for d in deliveries(ledger) if d.state == "dead"]
    assert "refused" in (refused[0].last_error or "") and "hooks.internal" in (refused[0].last_error or "")


def test_finding_5_allow_list_and_tenant_hosts() -> None:
    public = lambda host, port: ["93.184.215.14"]  # noqa: E731
    check = check_webhook_target
    assert check("http://10.1.2.3:8080/x", allow_http=False, allow_hosts="10.0.0.0/8").allow_listed
    assert check("http://10.1.2.3:8080/x", allow_http=False, allow_hosts="10.1.2.3:8080").address == "10.1.2.3"
    with pytest.raises(WebhookUrlError, match="a private address"):
        check("http://10.1.2.3:9090/x", allow_http=False, allow_hosts="10.1.2.3:8080")  # another port
    with pytest.raises(WebhookUrlError, match="a cloud metadata address"):  # a name entry does not reach metadata
        check("https://meta.corp/", allow_http=False, allow_hosts="meta.corp", resolve=lambda h, p: ["169.254.169.254"])
    with pytest.raises(WebhookUrlError, match="plain http"):  # the allow-list opens http only to its receivers
        check("http://hooks.example.com/", allow_http=False, allow_hosts="10.0.0.0/8", resolve=public)
    tenant = ["hooks.shop-a.example", "*.shop-a.example"]
    ok = check("https://api.shop-a.example/x", allow_http=False, allow_hosts="", tenant_hosts=tenant, resolve=public)
    assert ok.host == "api.shop-a.example" and ok.port == 443
    with pytest.raises(WebhookUrlError, match="not one of this tenant's webhook hosts"):
        check("https://hooks.shop-b.example/x", allow_http=False, allow_hosts="", tenant_hosts=tenant, resolve=public)
    with pytest.raises(WebhookResolveError):
        check("https://nowhere.invalid/", allow_http=False, allow_hosts="", resolve=lambda h, p: [])
    with pytest.raises(ValueError, match="PIXELMILL_WEBHOOK_ALLOW_HOSTS"):
        Settings(webhook_allow_hosts="10.0.0.0/8, not a host")


def _tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA the client trusts and a server certificate for `name` (only) signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pixelmill test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = tmp_path / "server.pem"
    pem.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pem)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def test_finding_5_tls_certificate_is_checked_against_the_host_name_not_the_address(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """Connected to 127.0.0.1 with SNI `hooks.internal`: the certificate for `hooks.internal` is accepted; the
    same server named `other.internal` (same address) fails verification, so nothing is sent to it."""
    server_tls, client_tls = _tls_pair(tmp_path, "hooks.internal")
    receiver = receivers(tls=server_tls)
    settings = settings_for(tmp_path, webhook_allow_hosts="hooks.internal,other.internal")
    ledger = Ledger(settings)
    add_event(ledger, f"https://hooks.internal:{receiver.port}/hook", "good")
    add_event(ledger, f"https://other.internal:{receiver.port}/hook", "bad")
    outcome = Dispatcher(settings, ledger, ssl_context=client_tls, resolve=lambda h, p: [LOOPBACK]).run_once()
    assert (outcome.delivered, outcome.retrying) == (1, 1)
    assert [r["host"] for r in receiver.received] == [f"hooks.internal:{receiver.port}"]
    assert "CERTIFICATE_VERIFY_FAILED" in (deliveries(ledger)[1].last_error or "")


# --- finding 8: bounded deliveries ------------------------------------------------------------------------


def test_finding_8_a_trickling_receiver_is_cut_off_at_the_total_deadline(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the attempt's total deadline (1 s) ends it."""
    slow = receivers("trickle")
    settings = settings_for(tmp_path)
    ledger = Ledger(settings)
    add_event(ledger, slow.url)
    started = time.monotonic()
    outcome = Dispatcher(settings, ledger).run_once()
    assert time.monotonic() - started < 3.0  # the whole status line would take 340 s
    assert outcome.retrying == 1 and (deliveries(ledger)[0].last_error or "").startswith("timeout")


def test_finding_8_a_huge_answer_is_not_read(tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    """A 300 MB answer: the dispatcher keeps the first bytes for the error and hangs up; the receiver could not
    even push 300 MB into the connection (it stops at the socket buffers)."""
    huge = receivers("huge")
    settings = settings_for(tmp_path, webhook_timeout=5.0, dispatch_lease=10.0)
    ledger = Ledger(settings)
    add_event(ledger, huge.url)
    started = time.monotonic()
    assert Dispatcher(settings, ledger).run_once().retrying == 1
    assert time.monotonic() - started < 4.0  # not the 5 s deadline: it hung up
    error = deliveries(ledger)[0].last_error or ""
    assert error.startswith("HTTP 500: xxx") and len(error) <= 220
    huge.release.set()
    assert huge.sent < 64 * 1024 * 1024


def healthy_first(settings: Settings, ledger: Ledger, healthy: Receiver) -> Dispatcher:
    """Queue an event for `healthy` behind the stuck ones, start a dispatcher and check that event went out
    within 2 s; the running dispatcher is the caller's to stop."""
    add_event(ledger, healthy.url, "healthy")
    dispatcher = Dispatcher(settings, ledger)
    started = time.monotonic()
    dispatcher.start()
    try:
        healthy.wait_for(1)
        assert healthy.received and healthy.received[0]["at"] - started < 2.0
    except BaseException:
        dispatcher.stop()
        raise
    return dispatcher


def test_finding_8_slow_receiver_delays_no_other_receiver(tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    """Six events for a receiver that never answers come first; the healthy receiver's event, queued behind
    them, is still delivered at once, and the stuck one never holds more than its per-receiver slots."""
    stuck, healthy = receivers("hang"), receivers()
    settings = settings_for(tmp_path, webhook_timeout=3.0, dispatch_lease=6.0, webhook_per_receiver=2)
    ledger = Ledger(settings)
    for n in range(6):
        add_event(ledger, stuck.url, f"stuck-{n}")
    dispatcher = healthy_first(settings, ledger, healthy)  # 6 x 3 s one after another before
    try:
        stuck.wait_for(3, timeout=0.5)  # it must not get a third before its first two end
        assert len(stuck.received) == 2  # its two slots; the other four wait for them, not for everyone
    finally:
        stuck.release.set()
        dispatcher.stop()


def test_one_tenants_many_slow_receivers_never_hold_every_delivery_thread(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """A tenant with five receivers (different ports: the per-receiver limit does not bind) that never answer
    holds at most all but one of the four threads; another tenant's event behind them goes out at once."""
    stuck = [receivers("hang") for _ in range(5)]
    healthy = receivers()
    settings = settings_for(tmp_path, webhook_timeout=3.0, dispatch_lease=6.0, webhook_workers=4)
    ledger = Ledger(settings)
    with ledger.session() as session:
        noisy, _ = add_tenant(session, "noisy", with_token=False)
    for n, receiver in enumerate(stuck):
        add_event(ledger, receiver.url, f"stuck-{n}", tenant_id=noisy.id)
    dispatcher = healthy_first(settings, ledger, healthy)
    try:
        deadline = time.monotonic() + 5  # the third stuck delivery may still be connecting on a loaded machine
        while sum(len(r.received) for r in stuck) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # and no fourth comes: the last thread stays free for other tenants
        assert sum(len(r.received) for r in stuck) == 3  # 4 threads, all but one for the noisy tenant
    finally:
        for receiver in stuck:
            receiver.release.set()
        dispatcher.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    servers = request.getfixturevalue("test_servers")
    url: str = servers.get("postgres").create_database(servers.next_name("wh"))
    engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
    upgrade(engine)
    engine.dispose()
    return url


def test_finding_8_two_dispatchers_never_send_one_delivery_twice(
    tmp_path: Path, ledger_url: str | None, receivers: Callable[..., Receiver]
) -> None:
    """Two dispatchers on one ledger at once send each delivery once; and a dispatcher whose lease passed to
    another (it stalled beyond its lease) cannot overwrite the other's record: the lease is a fencing token."""
    receiver, failing = receivers(), receivers(status=500)
    settings = settings_for(tmp_path, database_url=ledger_url)
    ledger = Ledger(settings)
    for n in range(8):
        add_event(ledger, receiver.url, f"twice-{n}")
    a, b = Dispatcher(settings, ledger), Dispatcher(settings, ledger)
    threads = [threading.Thread(target=d.run_once) for d in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(receiver.received) == 8 and all(d.state == "delivered" for d in deliveries(ledger))

    add_event(ledger, failing.url, "fenced")
    [stale] = a._lease()
    with ledger.session() as session:  # time passes: a's lease runs out
        session.execute(update(Delivery).where(Delivery.id == stale.id).values(lease_until=stale.created))
    assert b.run_once().retrying == 1  # b takes it, the receiver answers 500: pending again, for a retry
    late = a.run_once()
    assert late.total == 0  # not due: b's backoff
    a._record(stale, None, late)  # a comes back and would call it delivered
    assert late.lost == 1 and late.delivered == 0
    [fenced] = [d for d in deliveries(ledger) if d.id == stale.id]
    assert (fenced.state, fenced.attempts, fenced.last_error) == ("pending", 1, "HTTP 500: ")
    assert len(failing.received) == 1
    ledger.close()


def test_finding_8_the_lease_must_outlast_an_attempt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PIXELMILL_DISPATCH_LEASE must be at least twice PIXELMILL_WEBHOOK_TIMEOUT"):
        Settings(data_dir=tmp_path, webhook_timeout=30.0, dispatch_lease=40.0)


# --- finding 12: secrets in logs --------------------------------------------------------------------------


def test_finding_12_webhook_secrets_are_masked_in_logs(tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    """Every line through the handler logs.configure installs, from pixelmill, httpcore (DEBUG) and httpx (which
    logs whole request URLs at INFO), with the token of a webhook URL's query masked."""
    import httpx

    token = "tok-" + "s3cr3t" * 4
    failing = receivers(status=500)
    url = f"{failing.url}?token={token}&shop=42"
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(logging.DEBUG)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        settings = settings_for(tmp_path)
        ledger = Ledger(settings)
        add_event(ledger, url)
        assert Dispatcher(settings, ledger).run_once().retrying == 1
        httpx.post(url, content=b"{}")
        logging.getLogger("shop").warning("callback %s failed", f"https://{token}@hooks.example.com/x")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert "delivery failed; will retry" in text and "HTTP Request: POST" in text and "connect_tcp" in text
    assert "token=***" in text and "https://***@hooks.example.com" in text
    assert token not in text
    assert token not in (deliveries(ledger)[0].last_error or "")


def test_finding_12_uvicorn_log_lines_are_masked_too(capfd: pytest.CaptureFixture[str]) -> None:
    """`pixelmill serve`'s uvicorn writes through handlers of its own (not the root's): masked as well."""
    import uvicorn

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(logging.WARNING)
        uvicorn.Config(lambda *_: None, log_level="info")  # installs uvicorn's logging, as `serve` does
        access = '%s - "%s %s HTTP/%s" %d'
        logging.getLogger("uvicorn.access").info(access, "127.0.0.1:5", "GET", "/x?token=hunter22", "1.1", 200)
        logging.getLogger("uvicorn.error").warning("callback https://user:hunter22@hooks.example.com failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out, err = capfd.readouterr()
    assert "/x?token=***" in out + err and "https://***@hooks.example.com" in out + err
    assert "hunter22" not in out + err


def test_finding_12_a_refused_webhook_never_echoes_its_secrets(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_allow_hosts="")
    for url in ("https://user:hunter22@10.0.0.5/x", "https://10.0.0.5/x?token=hunter22"):
        with pytest.raises(WebhookUrlError) as refused:
            check_webhook_target(url, allow_http=False, allow_hosts=settings.webhook_allow_hosts)
        assert "hunter22" not in str(refused.value)


def test_the_loopback_receivers_here_really_listen() -> None:
    """The receivers above are reached only through the allow-list: without it the same URL is refused."""
    receiver = Receiver()
    try:
        with socket.create_connection((LOOPBACK, receiver.port), timeout=2):
            pass
        with pytest.raises(WebhookUrlError, match="plain http"):
            check_webhook_target(receiver.url, allow_http=False, allow_hosts="")
    finally:
        receiver.close()
