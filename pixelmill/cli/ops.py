"""Running and operating the fleet: `pixelmill worker` (a GPU worker, or one per GPU), `ping` (a health
check), `flower` (Celery's UI), `reconcile` (re-publish lost items), `url` (where a stored image is) and
`review` (blocked items; approving a false positive)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from contract.identity import model_problem, resolve_model
from contract.params import ENGINE_NAMES
from contract.settings import Settings, get_settings
from contract.storage import open_storage
from pixelmill.cli import errors
from pixelmill.cli.common import build_hint, caller_tenant, check_schema, fail, open_ledger, out, read_ledger

# Celery (contract.queue, celery.*), SQLAlchemy (contract.schema, producer.*) and the worker package (torch
# once it runs) are imported by the commands that use them, so `pixelmill --help` starts without them.


def worker(
    model: Annotated[
        Optional[str],
        typer.Option(
            help="Model this worker loads and whose queue it consumes (default: PIXELMILL_MODEL, else the tiny model)."
        ),
    ] = None,
    gpus: Annotated[
        Optional[str],
        typer.Option(
            help="'all' or indices like 0,1,3: one worker process per "
            "GPU, pinned with CUDA_VISIBLE_DEVICES, named gpu<N>@host."
        ),
    ] = None,
    hostname: Annotated[
        str,
        typer.Option(
            "--hostname",
            "-n",
            help="Celery node name; keep it stable across restarts so a restarted worker reclaims its items.",
        ),
    ] = "pixelmill@%h",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    engine: Annotated[
        Optional[str],
        typer.Option(
            help="auto|torch|tensorrt (default: PIXELMILL_ENGINE, auto): "
            "auto runs TensorRT when the engine cache has a build for "
            "this model and GPU, else torch."
        ),
    ] = None,
) -> None:
    """Run a worker: one prefork process that loads its model once, after the fork."""
    settings = worker_settings(model, engine)
    check_schema()
    check_signing(settings)
    if gpus is not None:
        from worker.gpus import GpuError, Supervisor, discover_gpus, select_gpus, worker_command

        try:
            selected = select_gpus(gpus, discover_gpus())
        except GpuError as exc:
            fail(str(exc))
        raise typer.Exit(Supervisor(selected, lambda gpu: worker_command(gpu, loglevel=loglevel)).run())
    served = resolve_model(settings.default_model)
    problem = model_problem(served)
    if problem:  # a file, a typo, an unknown hub id: say so now rather than serve a queue it cannot run
        fail(f"{problem} (--model / PIXELMILL_MODEL){build_hint(served)}")
    raise typer.Exit(run_worker(served, hostname=hostname, loglevel=loglevel))


def worker_settings(model: str | None, engine: str | None) -> Settings:
    """The settings a worker runs with: the GPU stack installed, --model and --engine put in the environment,
    where its children (worker.app, and the per-GPU workers of --gpus) read them."""
    missing = [m for m in ("torch", "diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"a worker needs {', '.join(missing)}: pip install 'pixelmill[worker]' (torch first, for your CUDA)")
    if engine is not None and engine not in ENGINE_NAMES:
        fail(f"--engine must be one of {', '.join(ENGINE_NAMES)}, got {engine!r}")
    for variable, value in (("PIXELMILL_MODEL", model), ("PIXELMILL_ENGINE", engine)):
        if value is not None:
            os.environ[variable] = value
            get_settings.cache_clear()
    return get_settings()


def check_signing(settings: Settings) -> None:
    """Provenance: refuse to start with a C2PA certificate/key that cannot sign (rather than failing items)."""
    from worker.provenance import ProvenanceError
    from worker.provenance import check_signing as check

    try:
        check(settings)
    except ProvenanceError as exc:
        fail(str(exc))


def run_worker(served: str, *, hostname: str, loglevel: str) -> int:
    """Celery's worker on the model's queue; its exit code, or exit 1 when its model failed to load."""
    from contract.queue import queue_for
    from contract.schema import utcnow
    from worker.app import app as celery_app

    queue = queue_for(served)
    began = utcnow()
    try:
        celery_app.worker_main(
            [
                "worker",
                f"--loglevel={loglevel}",
                f"--hostname={hostname}",
                "--pool=prefork",
                "--concurrency=1",
                f"--queues={queue}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:
        code = 0
    failure = load_failure(hostname, queue, since=began)
    if failure:  # the child stopped the worker: it never served the queue
        fail(f"worker stopped: {failure}", 1)
    return code


def load_failure(hostname: str, queue: str, *, since: datetime) -> str | None:
    """The error a worker node recorded since `since` when its model failed to load, or None."""
    from celery.utils.nodenames import default_nodename, host_format
    from sqlalchemy import select

    from contract.schema import Worker

    node = host_format(default_nodename(hostname))
    ledger = read_ledger()
    try:
        with ledger.session(readonly=True) as session:
            row = session.execute(
                select(Worker.state, Worker.error, Worker.last_seen).where(Worker.node == node, Worker.queue == queue)
            ).one_or_none()
    finally:
        ledger.close()
    if row is None or row.state != "failed" or row.last_seen < since:
        return None
    return str(row.error or "the model failed to load")


def ping(
    node: Annotated[
        Optional[str], typer.Option(help="Worker node name (%h: this host's name); default: any worker.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for replies.", min=0.1)] = 5.0,
) -> None:
    """Ask workers to answer through the broker; exits 1 if none does (a container health check)."""
    from celery.utils.nodenames import host_format

    from contract.queue import make_celery

    destination = [host_format(node)] if node else None
    celery_app = make_celery(get_settings())
    errors.check_broker(celery_app)  # an unreachable broker: exit 2 naming it, not minutes of retries
    replies = celery_app.control.ping(destination=destination, timeout=timeout)
    if not replies:
        fail(f"no answer from {destination[0] if destination else 'any worker'} within {timeout:g} s", 1)
    for reply in replies:
        out.print(*reply, highlight=False)


def flower(
    ctx: typer.Context,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 5555,
    auth_file: Annotated[
        Path | None,
        typer.Option(
            help="A file of `user:password` lines (yours, mode 0600) for Flower's basic auth; "
            "or set FLOWER_BASIC_AUTH. Never on the command line, where `ps` shows it to every local user."
        ),
    ] = None,
) -> None:
    """Celery's Flower UI on the configured broker; further options go to Flower (credentials excepted)."""
    if any(arg.split("=", 1)[0] in _ARGV_SECRETS for arg in ctx.args):
        fail(
            "pass Flower's credentials with --auth-file or the FLOWER_BASIC_AUTH variable, not on the command "
            "line: every local user can read a process's arguments"
        )
    if auth_file is not None:
        os.environ["FLOWER_BASIC_AUTH"] = _read_auth_file(auth_file)
    if not _is_loopback(address) and not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")):
        fail(f"Flower on {address} needs credentials: --auth-file or FLOWER_BASIC_AUTH (or a loopback --address)")
    if importlib.util.find_spec("flower") is None:
        fail("Flower is not installed: pip install 'pixelmill[flower]'")
    from contract.queue import make_celery

    celery_app = make_celery(get_settings(), main="pixelmill.flower")
    celery_app.start(["flower", f"--address={address}", f"--port={port}", *ctx.args])


# Flower options that carry secrets (they also read as FLOWER_<NAME> variables, which is how to give them).
_SECRET_OPTIONS = (("basic", "auth"), ("oauth2", "secret"), ("cookie", "secret"))
_ARGV_SECRETS = {f"--{name}{sep}{tail}" for name, tail in _SECRET_OPTIONS for sep in "-_"}


def _read_auth_file(path: Path) -> str:
    """The `user:password` lines of `path`, joined as Flower's FLOWER_BASIC_AUTH wants them; refused when the file
    is not this user's or others may read it."""
    try:
        st = path.stat()
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    except OSError as exc:
        fail(f"--auth-file {path}: {exc.strerror or exc}")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        fail(f"--auth-file {path}: must be yours and readable by you alone (chmod 600 {path})")
    if not lines or any(":" not in line or line.startswith(":") for line in lines):
        fail(f"--auth-file {path}: expected `user:password` lines")
    return ",".join(lines)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def review(
    target: Annotated[
        str, typer.Argument(metavar="JOB | approve", help="A job id to list its blocked items, or `approve`.")
    ],
    item: Annotated[
        Optional[int], typer.Argument(metavar="[ITEM]", help="With approve: the item id to publish (as listed).")
    ] = None,
    note: Annotated[
        Optional[str],
        typer.Option(
            help="With approve: why this image is fine (recorded beside "
            "the approver, who is the account running the command)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """`review JOB` lists blocked items with reasons; `review approve ITEM` publishes a false positive."""
    from producer.review import ReviewError, approve, blocked_items, os_identity

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        if target == "approve":
            if item is None:
                fail("review approve needs an ITEM id; `pixelmill review JOB` lists them")
            who = os_identity()
            with ledger.session() as session:
                key = approve(session, open_storage(get_settings()), tenant.id, item, by=who, note=note)
            if as_json:
                print(json.dumps({"item": item, "published": key, "approved_by": who}))
            else:
                out.print(f"item {item} approved by {who}: published at {key}", highlight=False)
            return
        if not target.isdigit() or item is not None:
            fail(f"usage: pixelmill review JOB | pixelmill review approve ITEM (got {target!r})")
        with ledger.session(readonly=True) as session:
            rows = blocked_items(session, tenant.id, int(target))
    except ReviewError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table("item", "key", "stage", "reason", "quarantined", "prompt", box=box.SIMPLE_HEAD, pad_edge=False)
    for row in rows:
        reason = row.reason
        why = (
            f"{reason.get('category')}: {reason.get('term')}"
            if row.stage == "prompt"
            else f"{reason.get('checker')}: "
            + ", ".join(f"{c} {row.safety['scores'][c]:+.3f}" if row.safety else c for c in reason.get("flagged", []))
        )
        table.add_row(
            str(row.item), f"{row.key}#{row.variant}", row.stage, why, row.quarantined or "-", row.prompt[:60]
        )
    out.print(table)
    out.print(f"{len(rows)} blocked; publish a false positive with `pixelmill review approve ITEM`")


def url(
    job: Annotated[int, typer.Argument(help="Job id.")],
    item: Annotated[str, typer.Argument(help="Item key (the catalogue's key column).")],
    variant: Annotated[int, typer.Option(help="Variant number.", min=0)] = 0,
    expires: Annotated[
        Optional[int],
        typer.Option(
            help="Seconds a presigned URL stays valid, 1 to 604800 (default: PIXELMILL_S3_PRESIGN_EXPIRES).",
            min=1,
            max=7 * 24 * 3600,
        ),
    ] = None,
) -> None:
    """Print a URL for one stored image: presigned on S3, a file URI locally."""
    from sqlalchemy import select

    from contract.schema import Image, Item, Job

    settings = get_settings()
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    with ledger.session(readonly=True) as session:
        key = session.scalar(
            select(Image.storage_key)
            .join(Item)
            .join(Job, Job.id == Item.job_id)
            .where(Item.job_id == job, Item.item_key == item, Item.variant == variant, Job.tenant_id == tenant.id)
        )
    if key is None:
        fail(f"no stored image for job {job}, item {item!r}, variant {variant}")
    print(open_storage(settings).locate(key, expires or settings.s3_presign_expires))


def reconcile(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Put items whose lease expired or whose message was lost back in the backlog (workers also do this)."""
    from contract.queue import make_celery
    from worker.reconciler import reconcile as run

    settings = get_settings()
    celery_app = make_celery(settings)
    errors.check_broker(celery_app)
    report = run(open_ledger(), celery_app, settings)
    if as_json:
        print(json.dumps(asdict(report)))
    else:
        out.print(
            f"put {report.requeued} lost items back in the backlog (the scheduler sends them); failed {report.failed}"
        )
