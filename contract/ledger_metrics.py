"""What the ledger says, as Prometheus gauges read at scrape time, and the endpoint every long-running process
serves (contract/metrics.py holds what the processes count).

The ledger, not the broker, is the backlog's truth: the scheduler keeps most of it `pending` in the ledger and
only a window in the broker (contract/scheduling.py), so a queue-length scaler sees a handful of messages for a
million items. `pixelmill_backlog_items` is the same sum of the jobs' `pending` counters that `pixelmill backlog`
and `GET /v1/backlog` print. Every process that serves metrics serves these too: aggregate them with
`max by (...)`, never `sum`.

GPU gauges come from NVML (nvidia-ml-py) where it loads and sees a GPU; on a CPU host they are absent, never 0.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select

from contract import metrics
from contract.faults import mask
from contract.ledger import Ledger
from contract.scheduling import backlog
from contract.schema import Delivery, Job, Tenant, Worker, utcnow
from contract.settings import Settings

log = logging.getLogger(__name__)


class LedgerCollector(Collector):
    """Backlog (and how much of it is paused), live workers and deliveries, from the ledger at each scrape."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger, self.settings = ledger, settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("pixelmill_ledger_up", "1 when this scrape could read the ledger.")
        try:
            families = list(self._read())
        except Exception as exc:  # noqa: BLE001 (an unreachable ledger is a value, not a failed scrape)
            log.warning("metrics: reading the ledger failed", extra={"error": mask(str(exc))[:300]})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        since = utcnow() - timedelta(seconds=self.settings.worker_stale_after)
        with self.ledger.session(readonly=True) as session:
            rows = backlog(session)
            live = session.execute(
                select(Worker.model, func.count())
                .where(Worker.last_seen > since, Worker.state != "failed")
                .group_by(Worker.model)
            ).all()
            deliveries = session.execute(
                select(Delivery.kind, Delivery.state, func.count())
                .where(Delivery.state.in_(["pending", "dead"]))
                .group_by(Delivery.kind, Delivery.state)
            ).all()
            paused = session.execute(  # the jobs table only, as `backlog` reads it
                select(Job.model, Tenant.name, func.sum(Job.pending))
                .join(Tenant, Tenant.id == Job.tenant_id)
                .where(Job.pending > 0, or_(Job.paused.is_(True), Tenant.paused.is_(True)))
                .group_by(Job.model, Tenant.name)
            ).all()
        pending = GaugeMetricFamily(
            "pixelmill_backlog_items",
            "Items pending in the ledger (paused ones included), per model, tenant and priority.",
            labels=["model", "tenant", "priority"],
        )
        for row in rows:
            pending.add_metric([row.model, row.tenant, row.priority], row.pending)
        yield pending
        workers = GaugeMetricFamily(
            "pixelmill_live_workers",
            "Workers whose heartbeat is younger than PIXELMILL_WORKER_STALE_AFTER and that did not fail to load.",
            labels=["model"],
        )
        for model, n in live:
            workers.add_metric([model], n)
        yield workers
        waiting = GaugeMetricFamily(
            "pixelmill_event_deliveries_waiting",
            "Event deliveries not delivered: pending (retrying) or dead (dead-lettered).",
            labels=["kind", "state"],
        )
        counts = {(kind, state): 0 for kind in ("queue", "webhook") for state in ("pending", "dead")}
        counts.update({(kind, state): n for kind, state, n in deliveries})  # none is a true 0: the ledger says so
        for (kind, state), n in sorted(counts.items()):
            waiting.add_metric([kind, state], n)
        yield waiting
        held = GaugeMetricFamily(
            "pixelmill_backlog_paused_items",
            "Of pixelmill_backlog_items, those of paused jobs or paused tenants, per model and tenant.",
            labels=["model", "tenant"],
        )
        for model, tenant, n in paused:
            held.add_metric([model, tenant], n)
        yield held


class GpuCollector(Collector):
    """Utilisation, memory and power of this worker's GPUs (CUDA_VISIBLE_DEVICES, by index) through NVML."""

    def __init__(self, nvml: Any, handles: dict[str, Any]) -> None:
        self.nvml, self.handles = nvml, handles

    @classmethod
    def probe(cls) -> GpuCollector | None:
        """The collector, or None where nvidia-ml-py is missing or sees no GPU (the gauges are then absent)."""
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception:  # noqa: BLE001 (not installed, no driver, no GPU: no GPU metrics)
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        indices = [i for i in visible.split(",") if i.strip().isdigit()] or [str(i) for i in range(count)]
        handles = {i: pynvml.nvmlDeviceGetHandleByIndex(int(i)) for i in indices if int(i) < count}
        return cls(pynvml, handles) if handles else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily("pixelmill_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"])
        memory = GaugeMetricFamily("pixelmill_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"])
        power = GaugeMetricFamily("pixelmill_gpu_power_watts", "GPU power draw (NVML).", labels=["gpu"])
        for index, handle in self.handles.items():
            try:
                util.add_metric([index], self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                memory.add_metric([index], self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
                power.add_metric([index], self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
            except Exception:  # noqa: BLE001 (a GPU that stops answering: no sample, not a fake one)
                continue
        yield from (util, memory, power)


def registry_for(ledger: Ledger, settings: Settings, *, gpus: bool = False) -> CollectorRegistry:
    """What a process serves: its own counters (every process's files in a multiprocess worker), the ledger's
    gauges, and the GPUs' where asked for and present."""
    registry = CollectorRegistry()
    if (directory := metrics.multiprocess_dir()) is not None:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(LedgerCollector(ledger, settings))
    if gpus and (gpu := GpuCollector.probe()) is not None:
        registry.register(gpu)
    return registry


class _Forward(Collector):
    """This process's default registry (where contract/metrics.py registers), inside another registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        yield from self.source.collect()


def serve(settings: Settings, ledger: Ledger, *, port_offset: int = 0, gpus: bool = False) -> threading.Thread | None:
    """The /metrics endpoint on PIXELMILL_METRICS_HOST:PIXELMILL_METRICS_PORT (+ offset) on a daemon thread, or
    None while the port is 0."""
    if not settings.metrics_port:
        return None
    port = settings.metrics_port + port_offset
    server, thread = start_http_server(port, settings.metrics_host, registry=registry_for(ledger, settings, gpus=gpus))
    log.info("metrics served", extra={"address": f"{settings.metrics_host}:{server.server_port}"})
    return thread
