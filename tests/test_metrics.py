"""Metrics as an operator sees them: a real Prometheus server (Debian's `prometheus` package) scrapes a worker,
the intake and the HTTP API while a job runs; the dashboard's every expression returns data from it; the alert
rules pass `promtool check rules`; the Kubernetes manifests and the KEDA ScaledObject validate offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import servers
from sqlalchemy import func, select, update

from conftest import Env, missing_server
from contract.queue import make_celery
from contract.schema import Event, Image, Item, Job, State

pytestmark = pytest.mark.e2e
yaml = pytest.importorskip("yaml", reason="PyYAML (in the dev extra) reads the rules and manifests")
ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ITEMS = 200  # the job size: the tiny model makes it in well under a minute
# Grafana's own variables, as Grafana would fill them in for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def prometheus_binaries() -> tuple[str, str]:
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        missing_server("prometheus", "prometheus or promtool is not installed (apt-get install prometheus)")
    return found  # type: ignore[return-value]


class Prometheus:
    """A Prometheus server on loopback scraping `targets` ({job name: host:port}) every second."""

    def __init__(self, root: Path, targets: dict[str, str], metrics_token: str) -> None:
        binary, _ = prometheus_binaries()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": name,
                    "static_configs": [{"targets": [target]}],
                    **({"authorization": {"credentials": metrics_token}} if name == "api" else {}),
                }
                for name, target in targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = servers.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(root / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        servers.wait_healthy(self.base, self.proc, root / "prometheus.log", timeout=30, path="/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": str(start), "end": str(end), "step": "1"}
        answer = httpx.get(f"{self.base}/api/v1/query_range", params=params, timeout=30).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def scraped_after(self, when: float, targets: int = 3, timeout: float = 30) -> None:
        """Wait until `targets` targets have been scraped (successfully) after the wall-clock time `when`."""
        deadline = time.monotonic() + timeout
        while True:
            stamps = self.query("timestamp(up == 1)")
            if len(stamps) == targets and min(float(s["value"][1]) for s in stamps) > when:
                return
            assert time.monotonic() < deadline, f"no fresh scrape of all targets: {stamps}"
            time.sleep(0.3)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def pending_in_ledger(env: Env) -> int:
    """Pending items counted row by row (not from the jobs' counters the gauge sums)."""
    with env.ledger().session() as session:
        return int(session.scalar(select(func.count()).select_from(Item).where(Item.state == State.pending)) or 0)


def backlog_gauge(prometheus: Prometheus) -> float:
    """The backlog as a dashboard reads it: every target serves the ledger's gauges, so max, never sum."""
    return prometheus.value("sum(max by (model, tenant, priority) (pixelmill_backlog_items)) or vector(0)")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "pixelmill.json").read_text())
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert found, "the dashboard has no queries"
    return found


@pytest.fixture
def observed(env: Env) -> Iterator[tuple[Env, Prometheus, float, list[tuple[int, float]]]]:
    """A 200-item job submitted through the intake and made by a worker, with Prometheus scraping the worker, the
    intake and the HTTP API; the backlog compared with the ledger at three moments."""
    prometheus_binaries()
    token = "metrics-token-0123456789"
    ports = {"worker": servers.free_port(), "intake": servers.free_port()}
    # No image checker on this job (the random-weight one blocks a few images at random): all 200 succeed, and the
    # blocked series the dashboard reads stands at 0.
    env.start("intake", PIXELMILL_METRICS_PORT=str(ports["intake"]), PIXELMILL_IMAGE_CHECKER="none")
    _, api = env.serve("--no-dispatch", PIXELMILL_METRICS_TOKEN=token)
    targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()} | {"api": api.removeprefix("http://")}
    prometheus = Prometheus(env.data_dir.parent / "prometheus", targets, token)
    try:
        request = {
            "v": 1,
            "key": "sku",
            "request_id": "metrics-1",
            "template": "studio photo of {title}",
            "rows": [{"sku": f"M-{i:03d}", "title": f"mug {i}"} for i in range(ITEMS)],
            "options": {"size": "64x64", "steps": 1},
            "reply_to": "pixelmill.reply.default.metrics",  # events: the dispatcher's deliveries are counted
        }
        began = time.time()
        make_celery(env.settings()).send_task("pixelmill.submit", args=[request], queue="pixelmill.intake")
        job = wait_for_job(env)
        samples = [sample(env, prometheus, targets=2)]  # 1: everything pending, no worker yet (intake and API)
        env.start_worker(
            PIXELMILL_METRICS_PORT=str(ports["worker"]), PIXELMILL_BATCH_SIZE="16", PIXELMILL_ITEMS_PER_MESSAGE="16"
        )
        env.wait_for(job, lambda c: c["succeeded"] >= ITEMS // 3, timeout=240)
        env.cli("pause", str(job))
        env.wait_for(job, lambda c: c["queued"] + c["running"] == 0, timeout=120)
        samples.append(sample(env, prometheus))  # 2: part made, the rest held
        env.cli("resume", str(job))
        env.wait_for(job, lambda c: c["succeeded"] + c["blocked"] + c["failed"] == ITEMS, timeout=240)
        samples.append(sample(env, prometheus))  # 3: nothing left
        prometheus.scraped_after(time.time())
        yield env, prometheus, began, samples
    finally:
        prometheus.close()


def wait_for_job(env: Env) -> int:
    deadline = time.monotonic() + 60
    while True:
        with env.ledger().session() as session:
            job = session.scalar(select(Job.id).where(Job.request_id == "metrics-1"))
        if job is not None:
            return int(job)
        assert time.monotonic() < deadline, (env.data_dir / "intake-0.log").read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def sample(env: Env, prometheus: Prometheus, targets: int = 3) -> tuple[int, float]:
    """The ledger's pending items and the gauge from the first scrape of every target after counting them."""
    counted, deadline = pending_in_ledger(env), time.monotonic() + 30
    while True:  # still: the scheduler has sent what the queue's window takes
        time.sleep(1.5)
        if (now := pending_in_ledger(env)) == counted or time.monotonic() > deadline:
            break
        counted = now
    at = time.time()
    prometheus.scraped_after(at, targets)
    assert pending_in_ledger(env) == counted, "the backlog moved while sampled (the job should be still)"
    return counted, backlog_gauge(prometheus)


def test_prometheus_sees_the_job_the_ledger_records(observed: tuple[Env, Prometheus, int, list[Any]]) -> None:
    env, prometheus, began, samples = observed
    # 1: all but the window the scheduler sends while no worker is live; 2: part made, the rest held; 3: none
    assert ITEMS - 10 <= samples[0][0] <= ITEMS and 0 < samples[1][0] < samples[0][0] and samples[2][0] == 0, samples
    for pending, gauge in samples:
        assert gauge == pending, samples
    with env.ledger().session() as session:
        succeeded = session.scalar(select(func.count()).select_from(Item).where(Item.state == State.succeeded))
        images = session.scalar(select(func.count()).select_from(Image))
    assert succeeded == prometheus.value('sum(pixelmill_items_total{outcome="succeeded"})')
    assert succeeded == ITEMS
    assert prometheus.value('sum(pixelmill_items_total{outcome=~"blocked|failed|cancelled"})') == 0
    assert images == prometheus.value("sum(pixelmill_images_generated_total)")
    for stage in ("generate", "judge", "encode", "store"):
        assert images == prometheus.value(f'sum(pixelmill_stage_seconds_count{{stage="{stage}"}})'), stage
    assert images == prometheus.value("sum(pixelmill_item_latency_seconds_count)")
    assert prometheus.value("sum(pixelmill_queue_wait_seconds_count)") >= ITEMS  # one per claim
    assert prometheus.value('sum(pixelmill_intake_requests_total{outcome="accepted"})') == 1
    assert prometheus.value("sum(pixelmill_http_requests_total)") > 0  # /healthz, /metrics
    assert prometheus.value("max(pixelmill_live_workers)") == 1
    engines = prometheus.query("pixelmill_engine_info == 1")
    assert [e["metric"]["job"] for e in engines] == ["worker"], engines
    with env.ledger().session() as session:  # the intake's trace id: on the job, its events and the worker's logs
        job = session.scalar(select(Job).where(Job.request_id == "metrics-1"))
        assert job is not None
        trace = job.params["trace_id"]
        finished = session.scalar(select(Event.body).where(Event.job_id == job.id, Event.type == "job.finished"))
    assert finished is not None and finished["trace_id"] == trace
    assert f"trace_id={trace}" in env.worker_logs()
    from contract.ledger_metrics import GpuCollector

    gpu_samples = prometheus.query('{__name__=~"pixelmill_gpu_.*"}')
    if GpuCollector.probe() is None:
        assert not gpu_samples, "a host without a GPU (or NVML) has no GPU samples, not zeros"
    else:
        assert {s["metric"]["job"] for s in gpu_samples} == {"worker"}, gpu_samples
    assert not prometheus.query('{__name__=~"celery_.*"}')  # celery-exporter's names stay free
    assert not prometheus.query('{__name__=~"pixelmill_.*", job_id!=""} or {__name__=~"pixelmill_.*", item!=""}')
    empty = []
    for expr in dashboard_expressions():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if "pixelmill_gpu_" not in expr and not prometheus.query_range(expr, began, time.time()):  # GPU: CPU host
            empty.append(expr)
    assert not empty, f"dashboard queries with no data: {empty}"


def test_the_alert_rules_pass_promtool() -> None:
    _, promtool = prometheus_binaries()
    rules = DEPLOY / "prometheus" / "alerts.yml"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # deploy/prometheus/alerts_test.yml: which alerts fire on given series (and which do not), with their text
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], capture_output=True, text=True, cwd=rules.parent
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert {"PixelmillBacklogWithoutWorker", "PixelmillErrorRate", "PixelmillDeadWebhooks"} <= names
    assert {"PixelmillJobNoProgress", "PixelmillScoreDrift"} <= names


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The check above could not pass on anything: promtool refuses a rule with a bad expression."""
    _, promtool = prometheus_binaries()
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: sum(rate(x[5m]) by\n")
    assert subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True).returncode != 0


def kubernetes_documents() -> list[dict[str, Any]]:
    return [d for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]


def test_the_kubernetes_manifests_validate_offline() -> None:
    pytest.importorskip("kubernetes_validate")
    import kubernetes_validate

    documents = kubernetes_documents()
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "ScaledObject", "Service", "Service"], kinds
    for document in documents:
        if document["kind"] == "ScaledObject":
            continue
        kubernetes_validate.validate(document, "1.30", strict=True)
    [gpu_worker] = [d for d in documents if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    [container] = gpu_worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    typo = {**gpu_worker, "spec": {**gpu_worker["spec"], "replica": 1}}  # the check refuses what it should
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, "1.30", strict=True)


def test_the_scaled_object_validates_against_kedas_schema() -> None:
    import jsonschema

    schema = json.loads((DEPLOY / "kubernetes" / "schema" / "keda-scaledobject-v1alpha1.json").read_text())
    [scaled] = [d for d in kubernetes_documents() if d["kind"] == "ScaledObject"]
    jsonschema.validate(scaled, schema)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "pixelmill_backlog_items" in trigger["metadata"]["query"]
    broken = {**scaled, "spec": {**scaled["spec"], "minReplicaCount": "two"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_metric_names_follow_the_conventions() -> None:
    from contract import metrics

    names = [m._name for m in vars(metrics).values() if hasattr(m, "_type") and hasattr(m, "_labelnames")]
    assert names and all(n.startswith("pixelmill_") for n in names)
    for metric in vars(metrics).values():
        if hasattr(metric, "_labelnames"):
            assert not {"job_id", "item", "item_id", "request_id", "job"} & set(metric._labelnames), metric
            if metric._type == "histogram":
                assert re.search(r"_(seconds|score)$", metric._name), metric._name


def test_the_api_serves_metrics_behind_its_token_and_traces_requests(env: Env) -> None:
    from fastapi.testclient import TestClient
    from test_frontdoor import request as v1_request

    from conftest import LOOPBACK
    from pixelmill.api.http import create_app

    settings = env.settings(metrics_token="scrape-token-0123456789")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    request = v1_request("traced-1", options={"size": "64x64", "steps": 1}, reply_to="pixelmill.reply.default.traced")
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as client:
        answer = client.get("/healthz", headers=traced)
        assert answer.headers["x-trace-id"] == trace
        accepted = client.post("/v1/jobs", json=request, headers=traced)
        assert accepted.status_code in (200, 201, 202), accepted.text
        assert accepted.headers["x-trace-id"] == trace
        other = client.get("/healthz").headers["x-trace-id"]
        assert other != trace and len(other) == 32  # a request without one gets its own
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
    assert scraped.status_code == 200
    assert 'pixelmill_http_requests_total{code="200",method="GET",route="/healthz"}' in scraped.text
    assert "pixelmill_ledger_up 1.0" in scraped.text
    assert 'pixelmill_event_deliveries_waiting{kind="webhook",state="dead"} 0.0' in scraped.text
    with env.ledger().session() as session:  # the request's trace id is on the job and on its event
        job = session.scalar(select(Job).where(Job.request_id == "traced-1"))
        assert job is not None and job.params["trace_id"] == trace
        bodies = list(session.scalars(select(Event.body).where(Event.job_id == job.id)))
    assert [b["type"] for b in bodies] == ["job.accepted"] and bodies[0]["trace_id"] == trace


def test_json_log_lines_carry_the_fields_and_the_trace_id() -> None:
    import logging

    from contract import logs

    record = logging.LogRecord("worker.chunk", logging.WARNING, __file__, 1, "item failed", None, None)
    record.job, record.item, record.tenant = 7, 42, "acme"
    token = logs.TRACE_ID.set("trace-1")
    try:
        logs.TraceFilter().filter(record)
    finally:
        logs.TRACE_ID.reset(token)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "item failed" and line["level"] == "WARNING"
    assert (line["job"], line["item"], line["tenant"], line["trace_id"]) == (7, 42, "acme", "trace-1")
    assert logs.trace_of("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "req-9") == "req-9"  # an invalid traceparent
    assert len(logs.trace_of(None, "has spaces")) == 32  # no request id that could not be a field: a new one


def test_the_metrics_cost_bench_small(tiny_model: Path) -> None:
    """bench/metrics_cost.py in a small form: the hooks cost under 1 % of the smallest chunk the suite makes."""
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "metrics_cost.py"), "--model", str(tiny_model)]
        + ["--size", "64", "--steps", "1", "--chunks", "100", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["metrics_per_chunk_us"] > 0 and report["generate_per_batch_ms"] > 0
    assert report["ratio_percent"] < 1, report


def test_gpu_gauges_come_from_nvml_and_skip_a_gpu_that_stops_answering() -> None:
    from types import SimpleNamespace

    from contract.ledger_metrics import GpuCollector

    class FakeNvml:
        def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:  # noqa: N802 (NVML's names)
            if handle == "lost":
                raise RuntimeError("GPU is lost")
            return SimpleNamespace(gpu=87)

        def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:  # noqa: N802
            return SimpleNamespace(used=3 * 2**30)

        def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
            return 250_500  # milliwatts

    families = {f.name: f for f in GpuCollector(FakeNvml(), {"0": "ok", "1": "lost"}).collect()}
    values = {name: [(s.labels, s.value) for s in f.samples] for name, f in families.items()}
    assert values == {
        "pixelmill_gpu_utilization_ratio": [({"gpu": "0"}, 0.87)],
        "pixelmill_gpu_memory_used_bytes": [({"gpu": "0"}, 3 * 2**30)],
        "pixelmill_gpu_power_watts": [({"gpu": "0"}, 250.5)],
    }


MULTIPROCESS = """
import os, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from contract import metrics

directory = Path(sys.argv[1])
directory.mkdir()
(directory / "counter_999999.db").write_bytes(b"a previous run's file")
(directory / "ledger.db").write_bytes(b"not ours")  # a mistyped setting: what is not a counter file stays
(directory / "kept").mkdir()
metrics.enable_multiprocess(directory)  # the worker parent, before the fork
assert not (directory / "counter_999999.db").exists()
assert (directory / "ledger.db").read_bytes() == b"not ours" and (directory / "kept").is_dir()
(directory / "ledger.db").unlink()  # (the collector below reads every *.db here)
metrics.scheduler_pass(True, {"m": 4}, 0.01)  # the parent counts too (its scheduler)
ready, go = os.pipe(), os.pipe()
child = os.fork()
if child == 0:  # the prefork child: loads its model, records a chunk of 4, waits, exits
    now = datetime.now(UTC)
    metrics.model_loaded("m", "torch-cpu", 1.5)
    timings = [{"total": 0.4, "batch": 4, "judge": 0.2, "encode": 0.01, "store": 0.02}] * 4
    metrics.recorded("m", "acme", {"succeeded": 4}, timings, [{"clip": 0.3}] * 4, [now - timedelta(seconds=9)] * 4, now)
    os.write(ready[1], b"x")
    os.read(go[0], 1)
    metrics.process_exited()
    os._exit(0)
os.read(ready[0], 1)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=str(directory))
alive = generate_latest(registry).decode()
os.write(go[1], b"x")
os.waitpid(child, 0)
dead = generate_latest(registry).decode()
print(alive)
print("----")
print(dead)
"""


def test_a_prefork_childs_counts_reach_the_parents_endpoint(tmp_path: Path) -> None:
    """Multiprocess mode as the worker runs it (in a fresh interpreter: it switches prometheus-client's value class
    for good): the directory is emptied, the child's and the parent's counts are served together, and the child's
    engine gauge goes when it exits while its counters stay."""
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS, str(tmp_path / "metrics")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alive, dead = proc.stdout.split("----")
    for text in (alive, dead):
        assert 'pixelmill_items_total{model="m",outcome="succeeded",tenant="acme"} 4.0' in text
        assert 'pixelmill_stage_seconds_count{model="m",stage="generate"} 4.0' in text
        assert 'pixelmill_stage_seconds_sum{model="m",stage="generate"} 0.4' in text  # 0.4 s over a batch of 4
        assert 'pixelmill_stage_seconds_count{model="m",stage="load"} 1.0' in text
        assert 'pixelmill_scheduler_dispatched_items_total{model="m"} 4.0' in text
    assert 'pixelmill_engine_info{engine="torch-cpu",model="m"} 1.0' in alive
    assert "pixelmill_engine_info{" not in dead


def test_a_failing_metric_never_fails_what_it_counts(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """A hook that raises (a full disk under the multiprocess directory) is logged; the chunk goes on."""
    from datetime import UTC, datetime

    from contract import metrics

    class Broken:
        def labels(self, *_: str) -> Any:
            raise OSError("No space left on device")

    monkeypatch.setattr(metrics, "ITEMS", Broken())
    metrics.recorded("m", "acme", {"succeeded": 1}, (), (), (), datetime.now(UTC))
    assert "recording metrics failed" in caplog.text and "No space left" in caplog.text


# --- outcomes made outside a chunk's recording: tallied in the ledger, counted by the scheduler's leader ---------


def items_counted(ledger: Any, settings: Any, model: str) -> dict[tuple[str, str], float]:
    """`pixelmill_items_total` of `model` as a scrape of this process's endpoint reports it ({(outcome, tenant): n})."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from contract.ledger_metrics import registry_for

    text = generate_latest(registry_for(ledger, settings)).decode()
    return {
        (s.labels["outcome"], s.labels["tenant"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "pixelmill_items"
        for s in family.samples
        if s.name == "pixelmill_items_total" and s.labels["model"] == model
    }


def fresh_model(name: str) -> str:
    """A model name of its own: the counters are this process's, and other tests (or parameters) count too."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def tallied_job(ledger: Any, model: str, n: int, params: dict[str, Any] | None = None) -> tuple[int, list[int]]:
    """A job of `n` pending items of `model`."""
    from test_transitions import PARAMS

    from contract import transitions
    from contract.tenants import DEFAULT_TENANT_ID

    items = [transitions.NewItem(f"K{i}", 0, f"p{i}", "", PARAMS, i, f"{model}-{i}") for i in range(n)]
    with ledger.session() as session:
        job = Job(tenant_id=DEFAULT_TENANT_ID, name="t", model=model, params=params or {}, counts={})
        session.add(job)
        session.flush()
        return job.id, transitions.add_items(session, job.id, items)


@pytest.fixture(params=["sqlite", "postgresql"])
def quiet_ledger(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """A ledger of each kind and its settings, no broker: what the scheduler's leader and a scrape read."""
    from contract.broker import EmbeddedRedis
    from contract.ledger import Ledger, make_engine, upgrade
    from contract.settings import Settings

    url = None
    if request.param == "postgresql":
        test_servers = request.getfixturevalue("test_servers")
        url = test_servers.get("postgres").create_database(test_servers.next_name("tally"))
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    if url is not None:  # a server's database is upgraded by `pixelmill db upgrade`, never on first use
        engine = make_engine(settings)
        upgrade(engine)
        engine.dispose()
    ledger = Ledger(settings)
    yield ledger, settings
    ledger.close()
    EmbeddedRedis(settings.data_path).stop()  # a test's make_celery(settings) starts it: leave no server behind


def leader_pass(ledger: Any, settings: Any) -> None:
    """One pass of a long-running process's scheduler (it holds the lease: nobody else runs one here)."""
    from contract.scheduling import Scheduler

    assert Scheduler(settings, ledger, app=None, holder="this-test").run_pass().leader


def test_a_cli_cancel_is_counted_by_a_long_running_process(quiet_ledger: tuple[Any, Any], tmp_path: Path) -> None:
    """`pixelmill cancel` is a short process that no Prometheus scrapes: its cancel reaches the scrape of a
    long-running one (the scheduler's leader), once."""
    import sys

    from contract.schema import OutcomeTally

    ledger, settings = quiet_ledger
    model = fresh_model("m-cli-cancel")
    job, _ = tallied_job(ledger, model, 3)
    cancel = subprocess.run(
        [sys.executable, "-m", "pixelmill", "cancel", str(job), "--json"],
        env={**os.environ, "PIXELMILL_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(ROOT)}
        | ({"PIXELMILL_DATABASE_URL": settings.database_url} if settings.database_url else {}),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["cancelled"] == 3
    assert items_counted(ledger, settings, model).get(("cancelled", "default"), 0) == 0  # not counted yet
    leader_pass(ledger, settings)
    assert items_counted(ledger, settings, model)[("cancelled", "default")] == 3
    leader_pass(ledger, settings)  # counted once: the tally went with the count
    assert items_counted(ledger, settings, model)[("cancelled", "default")] == 3
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(OutcomeTally)) == 0


def test_an_item_failed_at_claim_is_counted(quiet_ledger: tuple[Any, Any]) -> None:
    """An item whose attempts were used up is failed by the claim (not by a chunk's recording): counted as failed."""
    from contract import transitions

    ledger, settings = quiet_ledger
    model = fresh_model("m-claim-give-up")
    job, ids = tallied_job(ledger, model, 2)
    with ledger.session() as session:
        session.execute(update(Item).where(Item.id == ids[0]).values(state=State.queued, attempts=3))
        session.execute(update(Job).where(Job.id == job).values(paused=True))  # the pass dispatches nothing
    with ledger.session() as session:
        claimed = transitions.claim(session, job, ids, node="n", lease_seconds=60, max_attempts=3)
    assert [c.id for c in claimed] == [ids[1]]
    leader_pass(ledger, settings)
    counted = items_counted(ledger, settings, model)
    assert counted[("failed", "default")] == 1 and counted.get(("retried", "default"), 0) == 0


LOST = {"worker": "gone@x:1"}  # a holder on another node: its items are lost once their lease expired


def lost_items(ledger: Any, model: str, trace: str, attempts: Sequence[int], queued: int = 0) -> tuple[int, list[int]]:
    """A paused job (a pass dispatches nothing) whose request had a trace id and asked for item events: running
    items with expired leases on these attempts, then `queued` items whose message was lost two hours ago."""
    from datetime import timedelta

    from contract.schema import utcnow

    notify = {"reply_to": "pixelmill.reply.default.t", "events": ["item.failed", "job.finished"]}
    job, ids = tallied_job(ledger, model, len(attempts) + queued, params={"trace_id": trace, "notify": notify})
    past, old = utcnow() - timedelta(seconds=5), utcnow() - timedelta(hours=2)
    with ledger.session() as session:
        for item_id, attempt in zip(ids, attempts, strict=False):
            values = {"state": State.running, "lease_expires": past, "attempts": attempt, **LOST}
            session.execute(update(Item).where(Item.id == item_id).values(**values))
        lost_messages = ids[len(attempts) :]
        session.execute(update(Item).where(Item.id.in_(lost_messages)).values(state=State.queued, queued_at=old))
        session.execute(update(Job).where(Job.id == job).values(paused=True, pending=0))
    return job, ids


def test_reconciler_requeues_and_give_ups_are_counted(
    quiet_ledger: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost attempt the reconciler puts back is `retried`, one it gives up on `failed`; a queued item whose
    message was lost used no attempt and is not an outcome."""
    from worker import reconciler

    ledger, settings = quiet_ledger
    model = fresh_model("m-reconciled")
    lost_items(ledger, model, "a" * 32, attempts=[1, 3], queued=1)
    monkeypatch.setattr(reconciler, "queue_depth", lambda app, queue: 0)  # its model's queue is empty
    report = reconciler.reconcile(ledger, make_celery(settings), settings)
    assert (report.requeued, report.failed) == (2, 1)
    leader_pass(ledger, settings)
    counted = items_counted(ledger, settings, model)
    assert counted[("retried", "default")] == 1 and counted[("failed", "default")] == 1
    assert counted.get(("cancelled", "default"), 0) == 0


def test_the_reconcilers_events_carry_the_jobs_trace_id(
    quiet_ledger: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events a reconciler's give-up writes (item.failed, then job.finished once nothing is active) carry the
    trace id of the request that made the job, like the job's other events, though no request is being served."""
    from worker import reconciler

    ledger, settings = quiet_ledger
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    job, _ = lost_items(ledger, fresh_model("m-traced"), trace, attempts=[3])  # its last attempt: the job ends with it
    monkeypatch.setattr(reconciler, "queue_depth", lambda app, queue: 0)
    assert reconciler.reconcile(ledger, make_celery(settings), settings).failed == 1
    with ledger.session() as session:
        bodies = list(session.scalars(select(Event.body).where(Event.job_id == job).order_by(Event.id)))
    assert [b["type"] for b in bodies] == ["item.failed", "job.finished"], bodies
    assert all(b["trace_id"] == trace for b in bodies), bodies


def test_a_cli_cancel_reaches_the_intakes_scrape(env: Env, tmp_path: Path) -> None:
    """End to end: a job submitted and cancelled with the CLI while the intake (a long-running process, the only
    scheduler and so its leader; no worker) serves /metrics: a scrape of the intake counts every cancelled item."""
    from prometheus_client.parser import text_string_to_metric_families

    from conftest import write_catalogue

    port = servers.free_port()
    intake = env.start("intake", PIXELMILL_METRICS_PORT=str(port))
    job = env.submit(write_catalogue(tmp_path / "cancelled.csv", 12))["job"]
    assert json.loads(env.cli("cancel", str(job), "--json").stdout)["cancelled"] == 12
    deadline, seen = time.monotonic() + 60, -1.0
    while seen != 12:
        assert intake.poll() is None, (env.data_dir / "intake-0.log").read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"the intake's scrape counted {seen} cancelled items, not 12"
        time.sleep(0.3)
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:  # not serving yet
            continue
        seen = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "pixelmill_items_total" and s.labels["outcome"] == "cancelled"
        )
