"""The remote control commands a worker answers: only those ping, Flower and the CLI need."""

from __future__ import annotations

# Remote control commands a worker accepts (celery.worker.control). `ping`: `pixelmill ping` and container
# health checks. Read-only inspection for Flower and operators: stats, active, reserved, scheduled, revoked,
# registered, active_queues, query_task, clock, report. `enable_events`/`disable_events`/`heartbeat`: Flower's
# task view (events are JSON status updates, no code). Everything that changes or stops the worker (shutdown,
# pool_restart/grow/shrink, autoscale, add/cancel_consumer, rate_limit, time_limit, revoke, terminate) and
# everything that dumps internals (conf, memdump, objgraph, dump_*) is refused: anyone who can publish on the
# broker could send them, and the supervisor stops workers with signals, never over the broker.
ALLOWED_CONTROL = frozenset(
    {
        "ping",
        "stats",
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "registered",
        "active_queues",
        "query_task",
        "clock",
        "report",
        "enable_events",
        "disable_events",
        "heartbeat",
    }
)


def limit_remote_control(allowed: frozenset[str] = ALLOWED_CONTROL) -> list[str]:
    """Unregister every control command not in `allowed` (a command not registered gets no reply and has no
    effect); returns the names removed."""
    from celery.worker.control import Panel

    removed = sorted(name for name in Panel.data if name not in allowed)
    for name in removed:
        Panel.data.pop(name, None)
        Panel.meta.pop(name, None)
    return removed
