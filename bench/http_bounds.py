"""The HTTP API's bounds under attack, against a real `pixelmill serve` (uvicorn) on loopback (issue 22, 6 and 7).

1. An unauthenticated POST with a 200 MB chunked body: how long until the server answers (and with what), how
   much of the body it took before closing, and the server process' RSS growth (/proc/PID/status: VmRSS now,
   VmHWM the peak) against its RSS before.
2. 300 connections that each send part of a request head and hold it: how long `/healthz` takes meanwhile
   (the slowest of 5), and its status.

    python bench/http_bounds.py [--mb 200] [--slow 300] [--code DIR]

`--code DIR` serves another checkout (e.g. `git archive` of an older commit) to compare: the server runs with
DIR as its working directory and PYTHONPATH. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
TOKEN = "bench-token-0123456789abcdef"

import servers  # noqa: E402  (tests/servers.py: the same loopback helpers the tests use)


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def start(code: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = servers.free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "PIXELMILL_DATA_DIR": str(data),
        "PIXELMILL_API_TOKENS": f"bench:{TOKEN}",
    }
    log = open(data.parent / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelmill", "serve", "--port", str(port), "--no-dispatch"],
        cwd=code,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    servers.wait_healthy(base, proc, data.parent / "serve.log")
    return proc, base


def chunked_unauthenticated(base: str, pid: int, megabytes: int) -> dict[str, object]:
    """Send a `megabytes` chunked body without a token, as fast as the server takes it, until it answers."""
    host, port = base.removeprefix("http://").split(":")
    before = memory_mb(pid)
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"[" * (1 << 20))  # also as deep as JSON gets: the old code parsed it
    sock = socket.create_connection((host, int(port)))
    started = time.monotonic()
    sock.sendall(
        f"POST /v1/jobs/1/retry HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    sock.setblocking(False)
    answer, answered_at, sent, left, pending = b"", None, 0, megabytes, memoryview(b"")
    while True:
        if not pending and left >= 0:  # the next chunk; after the last one, the terminating empty chunk
            pending, left = memoryview(chunk if left else b"0\r\n\r\n"), left - 1
        readable, writable, _ = select.select([sock], [sock] if pending else [], [], 120)
        if not readable and not writable:
            break
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data and answered_at is None:
                answered_at = time.monotonic() - started
            answer += data
            if not data or b"\r\n\r\n" in answer:  # closed, or the answer's head is here
                break
        if writable:
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):  # closed: whatever answer came is read above
                pending, left = memoryview(b""), -1
                continue
            pending, sent = pending[n:], sent + n
    sock.close()
    after = memory_mb(pid)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return {
        "body_mb_offered": megabytes,
        "body_mb_sent_before_answer": round(sent / (1 << 20), 1),
        "answer": status,
        "answered_after_s": round(answered_at if answered_at is not None else -1, 3),
        "rss_before_mb": round(before["VmRSS"], 1),
        "rss_growth_mb": round(after["VmRSS"] - before["VmRSS"], 1),
        "peak_growth_mb": round(after["VmHWM"] - before["VmHWM"], 1),
    }


def slow_connections(base: str, count: int) -> dict[str, object]:
    """`count` connections holding half a request head each; then /healthz, five times."""
    host, port = base.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode())
            held.append(sock)
        times: list[float] = []
        statuses: list[int | str] = []
        for _ in range(5):
            started = time.monotonic()
            try:
                statuses.append(httpx.get(f"{base}/healthz", timeout=10).status_code)
            except httpx.TransportError as exc:
                statuses.append(type(exc).__name__)
            times.append(time.monotonic() - started)
        still_open = sum(not select.select([s], [], [], 0)[0] for s in held)
    finally:
        for sock in held:
            sock.close()
    return {
        "slow_connections": count,
        "still_held_after": still_open,
        "healthz_statuses": statuses,
        "healthz_slowest_s": round(max(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="size of the unauthenticated chunked body, MB")
    parser.add_argument("--slow", type=int, default=300, help="slow connections to hold")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixelmill-http-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        proc, base = start(args.code.resolve(), data)
        try:
            result = {
                "code": str(args.code),
                "chunked_401": chunked_unauthenticated(base, proc.pid, args.mb),
                "slowloris": slow_connections(base, args.slow),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
