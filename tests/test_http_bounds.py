"""The HTTP API's bounds against a real `pixelmill serve` (uvicorn) on loopback, one test per finding of issue 22
it answers (6, 7, 10, 13, 15): each sends the attack over a raw socket where HTTP clients would tidy it up."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from test_frontdoor_e2e import ROOT, TOKEN, logs

from conftest import Env

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_LINE = [f"Authorization: Bearer {TOKEN}"]
JSON = "Content-Type: application/json"


@dataclass
class Served:
    env: Env
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def log(self) -> str:
        return logs(self.env, "serve")[-3000:]


def serve(tmp: Path, **settings: str) -> Iterator[Served]:
    """`pixelmill serve --no-dispatch` with these settings, once /healthz answers; stopped after."""
    env = Env(tmp / "data", tmp / "no-model")
    env.data_dir.mkdir(parents=True)
    proc, base = env.serve("--no-dispatch", **{"PIXELMILL_API_TOKENS": f"ci:{TOKEN}", **settings})
    yield Served(env, int(base.rpartition(":")[2]), proc)
    env.close()


def served(name: str, doc: str, **settings: str) -> Any:
    """A module-scoped fixture serving with these settings (and the test token)."""

    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
        yield from serve(tmp_path_factory.mktemp(name), **settings)

    fixture.__doc__ = doc
    return pytest.fixture(scope="module", name=name)(fixture)


guarded = served(
    "guarded",
    "Tokens, a 256 KiB body cap, the default timeouts and connection cap.",
    PIXELMILL_HTTP_MAX_BODY_BYTES="262144",
)


tokenless = served("tokenless", "No tokens configured at all.", PIXELMILL_API_TOKENS="")


def head(served: Served, method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{served.port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body (by Content-Length) of one response read from `sock`."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    raw, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `seconds`; anything it sends is read and dropped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_finding_6_unauthenticated_chunked_body_is_refused_before_reading(guarded: Served) -> None:
    # /v1/jobs reads its own body; FastAPI reads and parses retry's before any dependency, the token check too.
    tries = [([], "/v1/jobs/1/retry"), (["Authorization: Bearer wrong-token-0123456789"], "/v1/jobs")]
    for auth, path in [*tries, (["Authorization: Basic Y2k6eA=="], "/v1/jobs/1/retry")]:
        with guarded.connect() as sock:
            # The head only: not one body byte is sent, so an answer now was given without reading the body.
            sock.sendall(head(guarded, "POST", path, "Transfer-Encoding: chunked", "Content-Type: x/y", *auth))
            status, headers, body = response(sock)
            assert status == 401, body
            assert headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
            assert "bearer token" in json.loads(body)["detail"]
            assert closed_within(sock, 5)  # and the rest of the body is never read
    with guarded.connect() as sock:  # a declared length over the cap: 401 first, the caller is nobody yet
        sock.sendall(head(guarded, "POST", "/v1/jobs/1/cancel", "Content-Length: 999999999"))
        assert response(sock)[0] == 401


def test_finding_6_every_body_is_capped_chunked_or_not(guarded: Served) -> None:
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    for path in ("/v1/jobs", "/v1/jobs/1/retry"):  # the route that reads its body, and one FastAPI parses
        with guarded.connect() as sock:
            sock.sendall(head(guarded, "POST", path, *AUTH_LINE, "Transfer-Encoding: chunked", JSON))
            sent = 0
            while not select.select([sock], [], [], 0)[0]:  # until the server answers
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):  # answered and closed while this was sent
                    break
                sent += 16384
                assert sent < 4 * 1024 * 1024, f"{path}: no answer after {sent} bytes"
            status, headers, body = response(sock)
            assert status == 413 and headers["connection"] == "close", body
            assert "PIXELMILL_HTTP_MAX_BODY_BYTES" in json.loads(body)["detail"]
    declared = httpx.post(
        f"{guarded.base}/v1/jobs", headers={**AUTH, "Content-Type": "application/json"}, content=b" " * 300_000
    )
    assert declared.status_code == 413


def test_finding_7_300_slow_connections_leave_healthz_answering(guarded: Served) -> None:
    held = []
    try:
        for _ in range(300):  # each has sent part of a request head and holds it (the default 10 s deadline)
            sock = guarded.connect()
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\nX-Slow: ".encode())
            held.append(sock)
        started = time.monotonic()
        answer = httpx.get(f"{guarded.base}/healthz", timeout=5)
        took = time.monotonic() - started
        assert answer.status_code == 200 and took < 1, (answer.status_code, took, guarded.log())
        assert not closed_within(held[-1], 0.05)  # still held: the answer did not wait for them to go
    finally:
        for sock in held:
            sock.close()


tight = served(
    "tight", "One-second head and body deadlines.", PIXELMILL_HTTP_HEADER_TIMEOUT="1", PIXELMILL_HTTP_BODY_TIMEOUT="1"
)


def test_finding_7_a_trickled_request_head_or_body_is_closed_at_its_deadline(tight: Served) -> None:
    with tight.connect() as sock:  # a byte every 0.1 s: uvicorn's keep-alive timer alone restarts each time
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.1)[0]:
                break
        assert closed_within(sock, 3) and time.monotonic() - started < 4
    with tight.connect() as sock:  # a complete head, then part of the body
        sock.sendall(head(tight, "POST", "/v1/jobs", *AUTH_LINE, JSON, "Content-Length: 100") + b"{")
        assert closed_within(sock, 4)
    with tight.connect() as sock:  # a head that never ends, faster than its deadline: refused past 16 KiB
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000)
        assert response(sock)[0] == 400
    with tight.connect() as sock:  # a connection that sends nothing at all
        assert closed_within(sock, 4)
    with tight.connect() as sock:  # keep-alive: answered, then the next head has its own deadline
        sock.sendall(head(tight, "GET", "/healthz"))
        assert response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert closed_within(sock, 4)
    assert httpx.get(f"{tight.base}/healthz", timeout=5).status_code == 200  # a prompt client is unaffected
    log = logs(tight.env, "serve")
    assert "Traceback" not in log and "request head not complete within 1s" in log, log[-3000:]
    assert "request body not complete within 1s (PIXELMILL_HTTP_BODY_TIMEOUT)" in log


capped = served(
    "capped",
    "At most 8 connections, long deadlines: only the cap can free a slot.",
    PIXELMILL_HTTP_MAX_CONNECTIONS="8",
    PIXELMILL_HTTP_HEADER_TIMEOUT="120",
)


def test_finding_7_past_the_connection_cap_the_oldest_waiting_connection_is_shed(capped: Served) -> None:
    held = []
    try:
        for _ in range(20):
            sock = capped.connect()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(sock)  # accepted in this order (the listen queue is FIFO): the first is the oldest
        for _ in range(3):
            answer = httpx.get(f"{capped.base}/healthz", timeout=5)
            assert answer.status_code == 200, capped.log()
        shed = [closed_within(sock, 2) for sock in held[:12]]
        assert all(shed), shed
        assert not any(closed_within(sock, 0.05) for sock in held[-4:])  # the newest still wait
    finally:
        for sock in held:
            sock.close()


def test_finding_10_tokenless_mode_refuses_other_hosts_origins_and_non_json(tokenless: Served) -> None:
    base, port = tokenless.base, tokenless.port
    assert httpx.get(f"{base}/v1/jobs/1").status_code == 404  # tokenless: anyone on loopback
    for host in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(f"{base}/v1/jobs/1", headers={"Host": host}).status_code == 404, host
    # DNS rebinding: a page from evil.example whose name now resolves to 127.0.0.1; a wrong port; no Host name.
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"u@127.0.0.1:{port}"):
        refused = httpx.get(f"{base}/v1/jobs/1", headers={"Host": host})
        assert refused.status_code == 421 and "PIXELMILL_API_TOKENS" in refused.json()["detail"], host
    # A cross-site form or fetch from a browser on this host (its Origin header), cancel included.
    for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null", f"https://127.0.0.1:{port}"):
        refused = httpx.post(f"{base}/v1/jobs/1/cancel", headers={"Origin": origin})
        assert refused.status_code == 403 and "Origin" in refused.json()["detail"], origin
    assert httpx.post(f"{base}/v1/jobs/1/cancel", headers={"Origin": f"http://localhost:{port}"}).status_code == 404
    # A body must say it is JSON: a form's text/plain (the CORS-free content type) is refused unread.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = httpx.post(f"{base}/v1/jobs", content=b'{"v": 1}', headers=headers)
        assert answer.status_code == 415, (content_type, answer.text)
    answer = httpx.post(
        f"{base}/v1/jobs", content=b'{"v": 1}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert answer.status_code == 422 and answer.json()["problems"]  # read, and judged by the intake


def test_finding_10_with_tokens_host_is_free_and_json_is_still_required(guarded: Served) -> None:
    # Behind a proxy the Host is the proxy's; a browser cannot add the bearer token cross-site (no CORS).
    answer = httpx.get(f"{guarded.base}/v1/jobs/1", headers={**AUTH, "Host": "pixelmill.example.com"})
    assert answer.status_code == 404
    answer = httpx.post(f"{guarded.base}/v1/jobs", content=b"{}", headers={**AUTH, "Content-Type": "text/plain"})
    assert answer.status_code == 415


def test_finding_13_json_nested_3000_or_100000_deep_is_a_422(guarded: Served) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    for depth in (3000, 100_000):
        for path in ("/v1/jobs", "/v1/jobs/1/retry"):
            body = b"[" * depth + b"]" * depth
            answer = httpx.post(f"{guarded.base}{path}", content=body, headers=headers, timeout=30)
            assert answer.status_code == 422, (path, depth, answer.text)
            assert answer.json()["problems"] == [
                f"request: JSON nested {depth} levels deep; at most 64 arrays and objects inside each other"
            ]
    nested_in_a_string = json.dumps({"v": 1, "template": "[" * 3000})  # brackets inside a string are text
    answer = httpx.post(f"{guarded.base}/v1/jobs", content=nested_in_a_string, headers=headers)
    assert answer.status_code == 422 and "nested" not in answer.text, answer.text
    assert httpx.get(f"{guarded.base}/healthz").status_code == 200


def test_finding_15_dependency_floors_exclude_the_known_cves() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def floor(extra: str, name: str) -> Version:
        [req] = [Requirement(r) for r in project[extra] if Requirement(r).name == name]
        [spec] = [s for s in req.specifier if s.operator == ">="]
        return Version(spec.version)

    for extra in ("http", "dev"):  # h11 < 0.16: request smuggling (CVE-2025-43859)
        assert floor(extra, "h11") >= Version("0.16"), extra
    yaml = pytest.importorskip("yaml", reason="PyYAML (in the dev extra) reads docker/compose.yaml")
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    image = compose["services"]["redis"]["image"]
    tag = re.fullmatch(r"redis:(\d+\.\d+\.\d+)", image)
    assert tag is not None, image
    assert Version(tag.group(1)) >= Version("7.4.6"), image  # CVE-2025-49844


def test_bench_http_bounds_runs_and_meets_its_goals_at_a_small_size() -> None:
    """bench/http_bounds.py (docs/benchmarks.md) at 20 MB and 50 slow connections."""
    script = str(ROOT / "bench" / "http_bounds.py")
    proc = subprocess.run(
        [sys.executable, script, "--mb", "20", "--slow", "50"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    chunked, slow = result["chunked_401"], result["slowloris"]
    assert chunked["answer"] == "HTTP/1.1 401 Unauthorized" and chunked["answered_after_s"] < 1, chunked
    assert chunked["peak_growth_mb"] < 20 and chunked["body_mb_sent_before_answer"] < 20, chunked
    assert slow["healthz_statuses"] == [200] * 5 and slow["healthz_slowest_s"] < 1, slow
