"""Fixtures that start the real things: the embedded Redis, the SQLite ledger, `pixelmill worker` processes,
and (for the production combinations) PostgreSQL, a Redis server, RabbitMQ and an S3-compatible server.

Each test gets its own data dir, ledger database, queues and bucket, and short timings so recovery paths
run in seconds rather than the production minutes. Servers are started once per session, on loopback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import servers  # tests/servers.py: real server processes for the production combinations

from contract.broker import EmbeddedRedis
from contract.identity import resolve_model
from contract.ledger import Ledger, make_engine, upgrade
from contract.queue import make_celery, queue_depth, queue_for
from contract.settings import Settings
from contract.storage import Storage, open_storage
from contract.tenants import DEFAULT_TENANT_ID, TenantInfo

# Parallelism comes from xdist's processes (addopts: -n 6 on 2 cores), so each process gets one intra-op thread:
# OpenMP and BLAS threads of six processes otherwise spin against each other (the INT8 calibration of
# tests/test_quantize.py: 2.5 CPU-s with one thread, 20 with two on a busy machine). Torch reads these when it is
# first imported, by a test module after this file (contract/ never imports it).
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

# A ./.env in the checkout (`pixelmill demo` writes its checker's settings there) must not reach the tests'
# own Settings nor the processes they start (they inherit PIXELMILL_ENV_FILE): each test says what it configures.
Settings.model_config["env_file"] = None
os.environ["PIXELMILL_ENV_FILE"] = ""

# TestClient's base URL: a tokenless API answers only requests to a loopback Host (pixelmill/api/bounds.py).
LOOPBACK = "http://127.0.0.1"

FAST_TIMINGS = {
    "PIXELMILL_TASK_SOFT_TIME_LIMIT": "20",
    "PIXELMILL_TASK_TIME_LIMIT": "30",
    "PIXELMILL_LEASE_SECONDS": "40",
    "PIXELMILL_VISIBILITY_TIMEOUT": "60",
    "PIXELMILL_RECONCILE_INTERVAL": "1",
    "PIXELMILL_REQUEUE_AFTER": "3",
    # Test workers may run the jobs that ask for no image checker (the default policy refuses them;
    # tests/test_policy.py covers the floor itself).
    "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true",
    # One GPU batch per message, so tests can count messages; tests/test_catalogue_runs.py sends several.
    "PIXELMILL_ITEMS_PER_MESSAGE": "4",
}


# Fixtures of the tests that start worker processes or servers: they take seconds to minutes.
SLOW_FIXTURES = {"env", "any_env", "test_servers"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `minute(n)` first, the longest first (n: minutes on a loaded 2-core machine), then the
    other slow ones, then the rest (file order kept within each part): run in parallel (pytest-xdist, `-n` in
    pyproject's addopts), the long ones start at once and the many short ones fill the gaps, instead of one long
    test starting last and running by itself."""

    def part(item: pytest.Item) -> tuple[int, int]:
        if (minutes := item.get_closest_marker("minute")) is not None:
            return 0, -minutes.args[0]  # the longest first
        fixtures = set(getattr(item, "fixturenames", ()))
        slow = fixtures & SLOW_FIXTURES or any(item.iter_markers("e2e")) or any(item.iter_markers("slow"))
        return (1 if slow else 2), 0

    items.sort(key=part)


# Tests pytest-xdist runs in one process, in file order (xdist's own `xdist_group` mark does nothing on pytest 9:
# the id suffix it relies on is ignored), by group:
SAME_PROCESS: dict[str, tuple[str, ...]] = {
    # They share state in their process's memory (FINAL_LEDGERS).
    "final-ledgers": (
        "tests/test_end_to_end.py::test_catalogue_end_to_end_then_resubmit_skips",
        "tests/test_end_to_end.py::test_every_combination_reaches_the_same_final_ledger",
    ),
    # They share a module-scoped fixture that takes a minute of CPU to build (`quantised`): built once, not once in
    # every process that happens to get one of them.
    "quantised": tuple(
        f"tests/test_quantize.py::test_{name}"
        for name in (
            "recipe_keeps_sensitive_layers_in_high_precision",
            "conv_activation_ranges_come_from_the_step_calibrator",
            "onnx_graph_has_qdq_only_on_quantised_layers",
            "int8_onnx_matches_float_unet_within_bound",
        )
    ),
}
GROUP_OF = {nodeid: group for group, nodeids in SAME_PROCESS.items() for nodeid in nodeids}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Every test is its own unit of work, handed to whichever process is free, except the SAME_PROCESS groups."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return GROUP_OF.get(nodeid.split("[")[0], nodeid)

    return Scheduling(config, log)


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of this whole test run: shared by every pytest-xdist worker (each has its own basetemp
    inside it), the basetemp itself when the tests run in one process."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline, with the tiny checker, CLIP and aesthetic head beside it in `../judges`: built once
    per test run (the first xdist worker builds it under a file lock, the others wait and share it, read-only)."""
    from filelock import FileLock

    from worker.engine.tiny import build_tiny_pipeline
    from worker.tiny_image_checks import build_tiny_judges

    root = run_root(tmp_path_factory) / "models"
    with FileLock(f"{root}.lock"):
        if not (root / "built").exists():
            build_tiny_judges(root / "judges", seed=0)
            build_tiny_pipeline(root / "tiny", seed=0)
            (root / "built").touch()
    return root / "tiny"


def tiny_checks(model: Path) -> dict[str, str]:
    """Settings that judge every image with the tiny checker and scorers built beside `model`."""
    judges = model.parent / "judges"
    return {
        "PIXELMILL_IMAGE_CHECKER": str(judges / "checker"),
        "PIXELMILL_CLIP_MODEL": str(judges / "clip"),
        "PIXELMILL_AESTHETIC_HEAD": str(judges / "aesthetic.safetensors"),
    }


class Env:
    """A pixelmill installation in one data dir: its environment, settings, CLI and workers. `backend`
    holds the PIXELMILL_* URLs of the servers it uses (none: the embedded defaults), and every image is judged
    by the tiny checker and scorers (`tiny_checks`) unless a test overrides those settings."""

    def __init__(
        self, data_dir: Path, model: Path, backend: dict[str, str] | None = None, name: str = "embedded"
    ) -> None:
        self.data_dir = data_dir
        self.model = model
        self.name = name
        self.backend = {**tiny_checks(model), **(backend or {})}
        self.vars = {
            **os.environ,
            **FAST_TIMINGS,
            **self.backend,
            "PIXELMILL_DATA_DIR": str(data_dir),
            "PIXELMILL_MODEL": str(model),
            "PYTHONUNBUFFERED": "1",
            # Several workers share 2 cores in CI: OpenMP threads spinning in each of them would
            # slow all of them down by orders of magnitude.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        self.workers: list[subprocess.Popen[bytes]] = []

    def settings(self, **overrides: Any) -> Settings:
        values = {
            k.removeprefix("PIXELMILL_").lower(): v
            for k, v in {**FAST_TIMINGS, **self.backend}.items()
            if k.startswith("PIXELMILL_")
        }
        return Settings(data_dir=self.data_dir, model=str(self.model), **{**values, **overrides})

    def ledger(self) -> Ledger:
        return Ledger(self.settings())

    def storage(self) -> Storage:
        return open_storage(self.settings())

    @property
    def queue(self) -> str:
        return queue_for(resolve_model(str(self.model)))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pixelmill", *args], env=self.vars, text=True, capture_output=True, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pixelmill {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def cli_submit(
        self, catalogue: Path, *args: str, template: str = "studio photo of {title}, {color}", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`pixelmill submit` of a catalogue from write_catalogue (rows keyed by sku), as a user types it."""
        return self.cli("submit", str(catalogue), "--template", template, "--key", "sku", *args, check=check)

    def submit(self, catalogue: Path, *args: str) -> dict[str, Any]:
        proc = self.cli_submit(catalogue, "--size", "64x64", "--steps", "4", "--json", *args)
        submitted: dict[str, Any] = json.loads(proc.stdout)
        return submitted

    def start_worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start("worker", "--loglevel", "INFO", *args, **env)

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A `pixelmill` process of this installation, its log in <command>-N.log (stopped with the workers)."""
        log = open(self.data_dir / f"{args[0]}-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixelmill", *args],
            env={**self.vars, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def serve(self, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        """`pixelmill serve` on a free loopback port, once /healthz answers: the process and its base URL."""
        port = servers.free_port()
        proc = self.start("serve", "--port", str(port), *args, **env)
        base = f"http://127.0.0.1:{port}"
        servers.wait_healthy(base, proc, self.data_dir / f"serve-{len(self.workers) - 1}.log")
        return proc, base

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group: the main process and its prefork child."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=90)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.data_dir.glob("worker-*.log")))

    def wait_for(self, job: int, predicate: Callable[[dict[str, int]], bool], timeout: float = 180) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        ledger = self.ledger()
        try:
            while True:
                counts = job_counts(ledger, job)
                if predicate(counts):
                    return counts
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job} stuck at {counts}; worker logs:\n{self.worker_logs()[-6000:]}")
                time.sleep(0.2)
        finally:
            ledger.close()

    def images(self) -> list[Path]:
        root = self.data_dir / "images"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def objects(self) -> dict[str, str]:
        """sha256 of every stored object, by key, whatever the storage."""
        storage = self.storage()
        return {key: hashlib.sha256(storage.get(key)).hexdigest() for key in storage.keys()}

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill(proc, signal.SIGKILL)
        if "PIXELMILL_BROKER_URL" in self.backend:  # a shared server: leave nothing for the next test
            app = make_celery(self.settings())
            with app.connection_for_write() as conn:
                try:
                    conn.default_channel.queue_delete(self.queue)
                except Exception:  # noqa: BLE001 (never declared)
                    pass
        else:
            EmbeddedRedis(self.data_dir).stop()


def job_counts(ledger: Ledger, job: int) -> dict[str, int]:
    from producer.status import job_status

    with ledger.session() as session:
        status = job_status(session, job, tenant_id=DEFAULT_TENANT_ID)
    return {k: v for k, v in status.as_dict().items() if isinstance(v, int) and not isinstance(v, bool)}


def settled_depth(app: Any, queue: str, expected: int, timeout: float = 10.0) -> int:
    """The queue's depth once it reads `expected`, or its last reading after `timeout` seconds.

    A RabbitMQ quorum queue answers a passive declare from its Raft state, which can trail a confirmed publish by
    a moment; Redis counts at once. Tests that assert a depth wait for it to settle instead of reading it once.
    """
    deadline = time.monotonic() + timeout
    while (depth := queue_depth(app, queue)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return depth


def finished(counts: dict[str, int]) -> bool:
    return counts["pending"] + counts["queued"] + counts["running"] == 0


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path) -> Iterator[Env]:
    installation = Env(tmp_path / "data", tiny_model)
    installation.data_dir.mkdir()
    yield installation
    installation.close()


class Servers:
    """Real servers on loopback, each started on first use and stopped at the end of the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, Any] = {}
        self.serial = 0

    def get(self, kind: str) -> Any:
        if kind not in self.running:
            cls = {
                "postgres": servers.Postgres,
                "redis": servers.RedisServer,
                "rabbitmq": servers.RabbitMQ,
                "s3": servers.MotoS3,
            }[kind]
            reason = servers.unavailable(kind)
            if reason:
                missing_server(kind, reason)
            server = cls(self.root / kind)
            server.start()
            self.running[kind] = server
        return self.running[kind]

    def next_name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{os.getpid()}x{self.serial}"

    def backend(self, combo: str) -> dict[str, str]:
        """Fresh database, broker database/queues and bucket for one test on a combination of servers."""
        database, broker, storage = combo.split("-")
        values: dict[str, str] = {}
        if database == "pg":
            pg = self.get("postgres")
            values["PIXELMILL_DATABASE_URL"] = pg.create_database(self.next_name("pm"))
        if broker == "redis":
            redis_server = self.get("redis")
            redis_server.flushall()
            values["PIXELMILL_BROKER_URL"] = redis_server.url
        elif broker == "rabbitmq":
            values["PIXELMILL_BROKER_URL"] = self.get("rabbitmq").url
        if storage == "s3":
            s3 = self.get("s3")
            bucket = self.next_name("pm")
            s3.create_bucket(bucket)
            values.update(
                {
                    "PIXELMILL_STORAGE_URL": f"s3://{bucket}/images",
                    "PIXELMILL_S3_ENDPOINT_URL": s3.url,
                    "PIXELMILL_S3_REGION": "us-east-1",
                    **S3_CREDENTIALS,
                }
            )
        return values

    def close(self) -> None:
        for server in reversed(list(self.running.values())):
            server.stop()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "pixelmill-test", "AWS_SECRET_ACCESS_KEY": "pixelmill-test-secret"}

# The end-to-end suite runs on each: the embedded defaults and two production combinations.
COMBOS = ["embedded", "pg-redis-s3", "sqlite-rabbitmq-local"]


@pytest.fixture(scope="session")
def test_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    for key, value in S3_CREDENTIALS.items():  # boto3's standard chain, in this process as in the workers
        os.environ.setdefault(key, value)
    running = Servers(tmp_path_factory.mktemp("servers"))
    yield running
    running.close()


def installation_on(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, combo: str) -> Env:
    """An installation on `combo` (a COMBOS name): its servers started, its server database migrated."""
    backend = {} if combo == "embedded" else request.getfixturevalue("test_servers").backend(combo)
    installation = Env(tmp_path / "data", tiny_model, backend, name=combo)
    installation.data_dir.mkdir()
    if "PIXELMILL_DATABASE_URL" in backend:  # a server database is migrated on purpose, as in production
        engine = make_engine(installation.settings())
        upgrade(engine)
        engine.dispose()
    return installation


def missing_server(kind: str, reason: str) -> NoReturn:
    """Skip a test whose server is not installed; fail it under .ci/run (REQUIRE_TEST_SERVERS): no silent skips."""
    if os.environ.get("REQUIRE_TEST_SERVERS"):
        pytest.fail(f"{kind} is required (REQUIRE_TEST_SERVERS is set) but {reason}")
    pytest.skip(f"{kind}: {reason}")


@pytest.fixture(params=COMBOS)
def any_env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[Env]:
    """An installation on one combination of ledger, broker and storage."""
    installation = installation_on(request, tmp_path, tiny_model, request.param)
    yield installation
    installation.close()


def write_catalogue(path: Path, rows: int, *, start: int = 0) -> Path:
    colors = ["red", "navy", "sage green", "charcoal", "ivory", "mustard"]
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "title", "color"])
        for i in range(start, start + rows):
            out.writerow([f"SKU-{i:03d}", f"ceramic mug model {i}", colors[i % len(colors)]])
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The tenant `default` as migration 0011 makes it: what a one-team installation's doors act as.
DEFAULT_TENANT = TenantInfo(DEFAULT_TENANT_ID, "default", "pixelmill.reply.default.", (), ())
