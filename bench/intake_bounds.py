"""A 100 MB intake message against a running `pixelmill intake` (issue 22, finding 9): refused, and the intake's
memory does not grow by more than 20 MB.

Embedded defaults in a temporary data dir (the embedded Redis with `proto-max-bulk-len` set from
PIXELMILL_INTAKE_MAX_MESSAGE_BYTES). The intake runs as its own process (`python -m pixelmill intake`, solo pool,
its dispatcher on a thread: one process), and its resident memory is read from /proc/PID/status: VmRSS now and
VmHWM, the peak since it started. Each case sends one message as a plain Celery client would, then a small bad
request whose `job.rejected` on the reply queue proves the intake has handled everything before it; the figure is
the growth of the peak.

Cases: 100 MB (over the broker's cap: refused at its socket), and one between the two caps (17 MiB of body, over
the intake's 16 MiB, under the broker's 24 MiB with its envelope: it reaches the intake and is refused before its
JSON is decoded, answered with `job.rejected`). The second is the most a message the intake refuses can cost it.

    python bench/intake_bounds.py [--mb 100] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPLIES = "pixelmill.reply.default.bench"


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}


def message(rid: str, title_bytes: int, size: str = "64x64") -> dict[str, Any]:
    return {
        "v": 1,
        "request_id": rid,
        "key": "sku",
        "template": "{title}",
        "rows": [{"sku": "A", "title": "x" * title_bytes}],
        "options": {"size": size, "steps": 4},
        "reply_to": REPLIES,
    }


def wait_rejected(client: Any, marker: str, timeout: float = 120) -> float:
    """Seconds until a `job.rejected` whose request_id or problems contain `marker` arrives on the reply queue."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        popped = client.brpop([REPLIES], timeout=5)
        if popped is None:
            continue
        event = json.loads(base64.b64decode(json.loads(popped[1])["body"]))[0][0]
        if event["type"] == "job.rejected" and (
            event["request_id"] == marker or marker in " ".join(event["data"]["problems"])
        ):
            return time.monotonic() - start
    raise TimeoutError(f"no job.rejected for {marker!r} within {timeout}s")


def run(mb: int) -> dict[str, Any]:
    import redis
    from celery import Celery

    with tempfile.TemporaryDirectory(prefix="pm-intake-bench-") as tmp:
        env = {**os.environ, "PIXELMILL_DATA_DIR": tmp, "PYTHONPATH": str(ROOT)}
        env = {k: v for k, v in env.items() if k not in ("PIXELMILL_BROKER_URL", "PIXELMILL_DATABASE_URL")}
        subprocess.run([sys.executable, "-m", "pixelmill", "db", "upgrade"], env=env, check=True, capture_output=True)
        url = subprocess.run(
            [sys.executable, "-m", "pixelmill", "broker", "start"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        client = redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"), socket_timeout=10)
        log = open(Path(tmp) / "intake.log", "wb")
        intake = subprocess.Popen(
            [sys.executable, "-m", "pixelmill", "intake"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        sender = Celery(broker=url, set_as_current=False)
        try:
            sender.send_task("pixelmill.submit", args=[message("warm", 10, "1x1")], queue="pixelmill.intake")
            wait_rejected(client, "warm")
            before = memory_mb(intake.pid)
            result: dict[str, Any] = {"baseline": before, "cases": {}}

            started = time.monotonic()
            try:
                sender.send_task(
                    "pixelmill.submit", args=[message("huge", mb * 1024 * 1024)], queue="pixelmill.intake", retry=False
                )
                refused_at = "intake"
            except Exception as exc:  # noqa: BLE001 (the broker closes the connection: kombu or redis error)
                refused_at = f"broker ({type(exc).__name__})"
            sender.send_task("pixelmill.submit", args=[message("after-huge", 10, "1x1")], queue="pixelmill.intake")
            wait_rejected(client, "after-huge")
            after = memory_mb(intake.pid)
            result["cases"][f"{mb} MB"] = {
                "refused_at": refused_at,
                "seconds": round(time.monotonic() - started, 2),
                "rss_growth_mb": round(after["VmRSS"] - before["VmRSS"], 1),
                "peak_growth_mb": round(after["VmHWM"] - before["VmHWM"], 1),
            }

            before = after
            started = time.monotonic()
            sender.send_task("pixelmill.submit", args=[message("between", 17 * 1024 * 1024)], queue="pixelmill.intake")
            wait_rejected(client, "PIXELMILL_INTAKE_MAX_MESSAGE_BYTES")
            after = memory_mb(intake.pid)
            result["cases"]["17 MiB (between the caps)"] = {
                "refused_at": "intake, before decoding; job.rejected sent",
                "seconds": round(time.monotonic() - started, 2),
                "rss_growth_mb": round(after["VmRSS"] - before["VmRSS"], 1),
                "peak_growth_mb": round(after["VmHWM"] - before["VmHWM"], 1),
            }
            result["intake_alive"] = intake.poll() is None
            return result
        finally:
            sender.close()
            intake.terminate()
            intake.wait(30)
            subprocess.run([sys.executable, "-m", "pixelmill", "broker", "stop"], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the oversized message")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = run(args.mb)
    if args.json:
        print(json.dumps(result))
        return
    print(f"intake baseline: {result['baseline']}")
    for name, case in result["cases"].items():
        print(
            f"{name:>26}: refused at {case['refused_at']}, {case['seconds']} s, RSS +{case['rss_growth_mb']} MB, "
            f"peak +{case['peak_growth_mb']} MB"
        )
    print(f"intake still running: {result['intake_alive']}")


if __name__ == "__main__":
    main()
