"""Webhook isolation: how long a healthy receiver's events wait while another receiver never answers.

A real `Dispatcher` (default PIXELMILL_WEBHOOK_TIMEOUT, DISPATCH_INTERVAL, WORKERS and PER_RECEIVER) runs on its
thread over a SQLite ledger in a temporary data dir. Two receivers on loopback (allowed by
PIXELMILL_WEBHOOK_ALLOW_HOSTS): one accepts connections and never reads or answers, the other answers 200 at once.
Each round commits `--stuck` events for the silent receiver and then one for the healthy one (another job), and
measures the healthy event's delay from its commit to its arrival. The same rounds without the silent receiver
give the baseline (the scan interval alone). Goal (issue 22): the median delay with the silent receiver < 2 s.

    python bench/webhook_isolation.py                # 10 rounds, 5 stuck events per round
    python bench/webhook_isolation.py --rounds 20 --stuck 20
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract import events  # noqa: E402
from contract.events import Notify  # noqa: E402
from contract.ledger import Ledger  # noqa: E402
from contract.outbox import Dispatcher  # noqa: E402
from contract.settings import Settings  # noqa: E402
from contract.tenants import DEFAULT_TENANT_ID  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"pixelmill-bench-secret-012345678").decode()


class Healthy:
    """Answers 200 at once and notes when each event id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                arrived[self.headers["webhook-id"]] = time.monotonic()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Silent:
    """Accepts every connection and never reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


def run(rounds: int, stuck: int, with_silent: bool) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix="pixelmill-bench-"))
    settings = Settings(data_dir=data, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1")
    ledger = Ledger(settings)
    healthy, silent = Healthy(), Silent()
    dispatcher = Dispatcher(settings, ledger)
    dispatcher.start()
    delays = []
    try:
        for n in range(rounds):
            with ledger.session() as session:
                for s in range(stuck if with_silent else 0):
                    emit(session, f"stuck-{n}-{s}", silent.url)
            with ledger.session() as session:
                uid = emit(session, f"healthy-{n}", healthy.url)
            committed = time.monotonic()
            deadline = committed + 60
            while uid not in healthy.arrived and time.monotonic() < deadline:
                time.sleep(0.005)
            delays.append(healthy.arrived.get(uid, float("inf")) - committed)
    finally:
        dispatcher.stop()
        ledger.close()
    return delays


def emit(session: Any, scope: str, url: str) -> str:
    """One committed `job.rejected` with a webhook delivery to `url` (an event that needs no job); its uid."""
    kind = events.JOB_REJECTED
    notify = Notify(webhook=url)
    events.emit(session, type_=kind, scope=scope, request_id=scope, data={}, notify=notify, tenant_id=DEFAULT_TENANT_ID)
    return events.event_uid(scope, kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stuck", type=int, default=5, help="events for the silent receiver per round")
    args = parser.parse_args()
    defaults = Settings()
    print(
        f"PIXELMILL_WEBHOOK_TIMEOUT={defaults.webhook_timeout:g} DISPATCH_INTERVAL={defaults.dispatch_interval:g} "
        f"WEBHOOK_WORKERS={defaults.webhook_workers} WEBHOOK_PER_RECEIVER={defaults.webhook_per_receiver}"
    )
    for label, with_silent in (("baseline (no silent receiver)", False), ("with a silent receiver", True)):
        started = time.monotonic()
        delays = run(args.rounds, args.stuck, with_silent)
        print(
            f"{label}: healthy delivery delay median {statistics.median(delays):.3f} s, "
            f"max {max(delays):.3f} s over {len(delays)} rounds ({time.monotonic() - started:.1f} s)"
        )


if __name__ == "__main__":
    main()
