"""`pixelmill demo`: the whole product on the embedded defaults, from an empty data dir, in a few minutes.

It uses the same commands a user would: the tiny model is written like any diffusers checkpoint, the
worker is a real `pixelmill worker` process, and the catalogue goes through `submit`'s validation.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from rich.console import Console

from contract.broker import EmbeddedRedis
from contract.settings import Settings
from contract.settings import env_file as settings_env_file
from pixelmill.cli import demo_photos
from producer.options import Options

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "catalogue.csv"
# The scene model trained in this repository (models/scenes64/README.md) and its catalogue of captions it never
# trained on; without them (an installed package) the demo builds the random tiny model, as it always did.
TRAINED = Path(__file__).resolve().parents[2] / "models" / "scenes64"
SCENES = Path(__file__).resolve().parents[2] / "examples" / "scenes.csv"
TEMPLATE = "studio photo of {title}, {color}, {material}, white background"
SCENE_GUIDANCE = 2.0  # the scene model's colours are truest at low guidance (models/scenes64/README.md)
SCENE_TEMPLATE = "{product} on {background}"  # examples/scenes.csv: "a green bowl" on "a teal striped background"
NEGATIVE = "blurry, text, watermark"


def run_demo(
    settings: Settings,
    *,
    catalogue: Path | None,
    size: str,
    steps: int,
    timeout: float,
    console: Console,
    progress: Callable[..., Any],
) -> int:
    from contract.ledger import Ledger  # SQLAlchemy: loaded when the demo runs, not by `pixelmill --help`
    from contract.tenants import DEFAULT_TENANT_ID  # the demo is the fresh installation's: the tenant `default`
    from producer.request import make_request
    from producer.submit import submit_request

    trained = trained_model()
    catalogue = catalogue or (SCENES if trained else EXAMPLES)
    if not catalogue.exists():
        console.print(f"sample catalogue not found at {catalogue}; pass --catalogue")
        return 2
    started = time.monotonic()
    model = _demo_model(settings, console, trained=trained)

    settings, checks_env = _demo_checks(settings, console, trained=trained)
    if trained:  # the demo's worker serves the model the demo submits to, whatever PIXELMILL_MODEL says
        checks_env = {**checks_env, "PIXELMILL_MODEL": str(model)}
    broker = EmbeddedRedis(settings.data_path)
    started_broker = settings.embedded_broker and not broker.is_running()
    ledger = Ledger(settings)
    log_path = settings.data_path / "logs" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pixelmill", "worker", "--loglevel", "INFO"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **checks_env},
        )
    console.print(f"worker started (pid {worker.pid}, log {log_path})")

    def alive() -> bool:
        return worker.poll() is None

    scenes = catalogue == SCENES  # the scene model knows the scene words only: no negative prompt
    try:
        options = Options(
            template=SCENE_TEMPLATE if scenes else TEMPLATE,
            negative="" if scenes else NEGATIVE,
            guidance=SCENE_GUIDANCE if scenes else Options.guidance,
            size=size,
            steps=steps,
            key="sku",
            name="demo",
            model=str(model),
        )
        asked = make_request(settings, options, source=catalogue, tenant_id=DEFAULT_TENANT_ID)
        result = submit_request(settings, ledger, asked)
        console.print(f"job {result.job}: {result.items} items submitted, {result.skipped} already done")
        photo_job = demo_photos.submit_photos(settings, ledger, options, console)
        _await_worker_row(settings, ledger, str(model), alive, deadline=started + timeout)
        finals = [
            progress(ledger, job, 0.5, timeout - (time.monotonic() - started), alive, tenant_id=DEFAULT_TENANT_ID)
            for job in (result.job, photo_job)
        ]
        final, photos = finals
    finally:
        _stop(worker, console)
        if started_broker:
            broker.stop()
    _summary(settings, console, final, f"{size}, {steps} steps, {'trained scene' if trained else 'tiny'} model")
    demo_photos.report(settings, ledger, photos, console)
    console.print(f"took {time.monotonic() - started:.0f} s")
    ok = all(f.finished and f.failed == 0 for f in (final, photos))
    return 0 if ok else 1


def _await_worker_row(
    settings: Settings, ledger: Any, model: str, alive: Callable[[], bool], *, deadline: float
) -> None:
    """Until the worker the demo started has written its `workers` row (its parent is up: a few seconds), the
    progress lines would report the queue unserved and tell the user to start a worker the demo already started."""
    from contract.schema import utcnow
    from producer.status import no_worker_line

    while alive() and time.monotonic() < deadline:
        with ledger.session(readonly=True) as session:
            if no_worker_line(session, model, since=utcnow(), stale_after=settings.worker_stale_after) is None:
                return
        time.sleep(0.2)


def _summary(settings: Settings, console: Console, final: Any, shape: str) -> None:
    images = settings.resolved_storage_url
    console.print(
        f"\n[bold]demo summary[/] job {final.job}: {final.total} items, "
        f"{final.succeeded} succeeded, {final.failed} failed, {final.blocked} blocked, "
        f"{final.skipped} skipped as already done"
    )
    if final.images_per_s:
        console.print(f"throughput {final.images_per_s:.2f} images/s on this machine ({shape})")
    where = f"{images}/jobs/{final.job}/" if final.total else f"{images}/jobs/ (from earlier jobs)"
    console.print(f"images under {where} · ledger {settings.resolved_database_url}")


def _demo_model(settings: Settings, console: Console, *, trained: bool) -> Path:
    """The model the demo draws with: the trained scene model when it is here, else the tiny one. The tiny one
    is built either way: `pixelmill worker` serves it after the demo (the README's tour)."""
    tiny = settings.tiny_model_path
    if not (tiny / "model_index.json").exists():
        console.print(f"building the tiny model in {tiny} …")
        subprocess.run([sys.executable, "-m", "pixelmill", "model", "tiny", str(tiny)], check=True)
    if not trained:
        return tiny
    console.print(f"model: the scene model trained in this repository ({TRAINED}, see its README.md)")
    return TRAINED / "pipeline"


def trained_model() -> bool:
    """Whether the trained scene model is here (a source checkout) to run the demo on."""
    return all(
        (TRAINED / part).exists()
        for part in ("pipeline/model_index.json", "scorer/config.json", "aesthetic.safetensors")
    )


def _demo_checks(settings: Settings, console: Console, *, trained: bool = False) -> tuple[Settings, dict[str, str]]:
    """Without a configured image checker, judge with the tiny random checker and scorers, built like the
    tiny model: real code paths, meaningless scores; with the trained scene model, its scorer gives the CLIP
    score (it means something: does the picture show the prompt?). Returns the settings and the env for the
    worker."""
    if settings.image_checker is not None:
        return settings, {}
    judges = settings.data_path / "models" / "tiny-judges"
    paths = {
        "image_checker": judges / "checker",
        "clip_model": TRAINED / "scorer" if trained else judges / "clip",
        "aesthetic_head": TRAINED / "aesthetic.safetensors" if trained else judges / "aesthetic.safetensors",
    }
    if not all(path.exists() for path in paths.values()):
        console.print(f"building the tiny checker and scorers in {judges} …")
        # Its own report names the tiny scorers it built; what the demo uses is said once, below.
        subprocess.run(
            [sys.executable, "-m", "pixelmill", "model", "tiny-judges", str(judges)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    values = {name: str(path) for name, path in paths.items()}
    variables = {f"PIXELMILL_{name.upper()}": value for name, value in values.items()}
    hand_over(variables, console)
    return settings.model_copy(update=values), variables


def hand_over(variables: dict[str, str], console: Console, env_file: Path | None = None) -> None:
    """Write the demo's settings where every later command in this directory reads them (`.env`, or
    PIXELMILL_ENV_FILE; see contract/settings.py), so the README's next command works as it did in the demo.
    Only missing keys are appended: a user's own value is kept (and said so); if the file cannot be written, or
    PIXELMILL_ENV_FILE is empty, say what to set."""
    env_file = env_file or settings_env_file()
    if env_file is None:
        console.print(
            "PIXELMILL_ENV_FILE is empty (no settings file); for later commands, set: "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items()),
            highlight=False,
            markup=False,
        )
        return
    try:
        existing = {k.upper(): v for k, v in dotenv_values(env_file).items()} if env_file.exists() else {}
        missing = {k: v for k, v in variables.items() if k not in existing}
        if missing:
            text = env_file.read_text() if env_file.exists() else ""
            lines = "".join(f"{k}={_quoted(v)}\n" for k, v in missing.items())
            with open(env_file, "a") as fh:
                fh.write(("\n" if text and not text.endswith("\n") else "") + lines)
    except OSError as exc:
        console.print(
            f"could not write {env_file.resolve()} ({exc.strerror}); for later commands, set: "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items()),
            highlight=False,
            markup=False,
        )
        return
    if missing:
        console.print(
            f"wrote {', '.join(missing)} to {env_file.resolve()}: pixelmill submit, status and worker read it "
            "when run in this directory",
            highlight=False,
            markup=False,
        )
    for key in sorted(set(variables) - set(missing)):
        if existing[key] != variables[key]:
            console.print(
                f"kept {key}={existing[key]} in {env_file.resolve()} (the demo used {variables[key]})",
                highlight=False,
                markup=False,
            )


def _quoted(value: str) -> str:
    """A value as a .env line holds it: plain when it can be, else in single quotes with `\\` and `\\'` escaped
    (python-dotenv's rule: a path such as /home/o'brien/... made the line unreadable). "${" cannot be written
    literally (dotenv expands it even in quotes): OSError, so the caller says what to set instead."""
    if "${" in value:
        raise OSError(0, f"the value {value!r} holds '${{', which a .env file would expand")
    if all(c.isalnum() or c in "/._-+:@," for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stop_worker(worker: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    """Warm shutdown of a worker's process group (SIGTERM: finish the current batch), then SIGKILL if it
    hangs; False if it had already exited."""
    if worker.poll() is not None:
        return False
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    return True


def _stop(worker: subprocess.Popen[bytes], console: Console) -> None:
    if stop_worker(worker):
        console.print("worker stopped")
    else:
        console.print(f"[red]worker exited early with code {worker.returncode}[/]")
