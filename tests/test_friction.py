"""A new user's first hour, one test per rough edge they hit: output in pipes and at 80 columns, progress while
`submit --wait` waits, the demo handing over its settings, `.env` typos, secrets in messages, the PostgreSQL URL
form, `broker status`'s exit code, every request problem at once, HTTP's `?state=cancelled` and 404 bodies, and
a failed first submit leaving nothing behind. The CLI runs in-process (CliRunner: stdout is not a terminal)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import pixelmill.cli.status as status_cli
import pixelmill.cli.waiting as waiting
from contract.settings import Settings, get_settings
from contract.tenants import DEFAULT_TENANT_ID
from pixelmill.cli import app
from pixelmill.cli.common import out
from producer.status import JobStatus

ROOT = Path(__file__).resolve().parents[1]
LONG = "/srv/" + "/".join(["a-rather-long-directory-name"] * 8)  # over 200 characters: wraps at any width
NO_WORKER = (
    "no worker has served this model's queue pixelmill.acme-sd15.0123abcd for 120 s; "
    "start one: pixelmill worker --model /home/someone/models/stable-diffusion-v1-5"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No PIXELMILL_* from the outer environment, no COLUMNS, the cwd a scratch dir; settings re-read."""
    import os

    for key in [k for k in os.environ if k.startswith("PIXELMILL_")] + ["COLUMNS", "NO_COLOR", "FORCE_COLOR"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(Settings.model_config, "env_file", ".env")  # as the CLI reads it (conftest turns it off)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def invoke(*args: str) -> Any:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()


def status(**changes: Any) -> JobStatus:
    values: dict[str, Any] = {
        "job": 3,
        "name": "nightly",
        "created": "2026-12-07T02:00:00",
        "model": "acme/sd15",
        "total": 400,
        "pending": 100,
        "queued": 150,
        "running": 28,
        "succeeded": 118,
        "blocked": 0,
        "failed": 2,
        "skipped": 0,
        "images_per_s": None,
        "eta_s": None,
    }
    return JobStatus(**{**values, **changes})


class FakeLedger:
    @contextlib.contextmanager
    def session(self, readonly: bool = False) -> Iterator[None]:
        yield None


def feed(monkeypatch: pytest.MonkeyPatch, statuses: list[JobStatus]) -> None:
    """`job_status` answers these in turn (the last one from then on)."""
    import producer.status

    queue = list(statuses)
    monkeypatch.setattr(producer.status, "job_status", lambda *a, **k: queue.pop(0) if len(queue) > 1 else queue[0])


# --- plain output when stdout is not a terminal --------------------------------------------------------------


def test_piped_output_keeps_long_paths_on_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("worker.tiny_image_checks")
    fake.build_tiny_judges = lambda directory, seed=0: {"image_checker": Path(LONG) / "checker"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "worker.tiny_image_checks", fake)
    result = invoke("model", "tiny-judges", str(clean_env / "judges"))
    assert result.exit_code == 0, result.output
    assert f"PIXELMILL_IMAGE_CHECKER={LONG}/checker\n" in result.output
    assert "\x1b[" not in result.output  # no colour either


# --- status --watch and jobs at 80 columns -------------------------------------------------------------------


def test_status_watch_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(status_cli, "err", Console(file=screen, width=80, force_terminal=True, color_system=None))
    feed(monkeypatch, [status(no_worker=NO_WORKER)])
    status_cli.watch_job(FakeLedger(), 3, 0.01, timeout=0.05, tenant_id=DEFAULT_TENANT_ID)
    lines = [ANSI.sub("", line) for line in screen.getvalue().replace("\r", "\n").splitlines()]
    shown = [line for line in lines if line.strip()]
    assert all(len(line) <= 80 for line in shown), shown
    last_bar = [line for line in shown if line.startswith("job 3")][-1]
    assert "━" in last_bar and "120/400" in last_bar and "28 run" in last_bar and "2 fail" in last_bar
    assert NO_WORKER in " ".join(" ".join(shown).split())  # the whole line, wrapped, not cut


def test_jobs_keeps_names_and_shows_the_catalogue_at_80_columns() -> None:
    rows = [
        status(job=12, name="shop-nightly-20261207-021656", catalogue="shop-nightly", no_worker=NO_WORKER),
        status(job=11, name="mugs-20261206-021650", catalogue=None, blocked=3, cancelled=4, skipped=40),
    ]
    screen = Console(file=io.StringIO(), width=80, color_system=None)
    screen.print(status_cli.status_table(rows))
    text = screen.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "shop-nightly-20261207-021656" in text and "mugs-20261206-021650" in text
    assert "catalogue" in text and "shop-nigh" in text
    assert status_cli.no_worker_lines(rows) == [f"job 12: {NO_WORKER}"]


# --- submit --wait progress ------------------------------------------------------------------------------------


def test_submit_wait_prints_a_progress_line_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    piped = Console(file=screen, color_system=None)
    monkeypatch.setattr(status_cli, "err", piped)
    monkeypatch.setattr(waiting, "err", piped)
    busy = status(succeeded=118, failed=2, images_per_s=1.8, eta_s=150.0)
    done = status(pending=0, queued=0, running=0, succeeded=398, failed=2, images_per_s=1.8, eta_s=0.0)
    feed(monkeypatch, [busy, busy, busy, done])
    code = waiting.wait_and_report(
        FakeLedger(), 3, timeout=None, fail_on_drift=False, interval=0.01, report_every=0.0, tenant_id=DEFAULT_TENANT_ID
    )
    lines = screen.getvalue().splitlines()
    assert code == waiting.EXIT_FAILED
    assert lines.count("job 3: 120/400 done, 2 failed, 1.8 images/s, ETA 2m") == 3, lines
    assert lines[-1].startswith("job 3: 398 succeeded")


def test_submit_wait_reports_at_most_once_per_interval_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(status_cli, "err", Console(file=screen, color_system=None))
    feed(monkeypatch, [status()] * 5 + [status(pending=0, queued=0, running=0, succeeded=400, failed=0)])
    status_cli.watch_job(FakeLedger(), 3, 0.01, report_every=60.0, tenant_id=DEFAULT_TENANT_ID)
    assert screen.getvalue().splitlines() == ["job 3: 120/400 done, 2 failed"]


def test_submit_wait_shows_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, width=80, force_terminal=True, color_system=None)
    monkeypatch.setattr(status_cli, "err", terminal)
    monkeypatch.setattr(waiting, "err", terminal)
    feed(monkeypatch, [status(), status(pending=0, queued=0, running=0, succeeded=400, failed=0)])
    assert (
        waiting.wait_and_report(
            FakeLedger(), 3, timeout=None, fail_on_drift=False, interval=0.01, tenant_id=DEFAULT_TENANT_ID
        )
        == 0
    )
    assert "━" in screen.getvalue() and "400/400" in ANSI.sub("", screen.getvalue())


# --- the demo hands over -------------------------------------------------------------------------------------


def judges(data: Path) -> None:
    root = data / "models" / "tiny-judges"
    (root / "checker").mkdir(parents=True)
    (root / "clip").mkdir()
    (root / "aesthetic.safetensors").write_bytes(b"")


def test_after_the_demo_the_next_command_works_in_the_same_directory(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixelmill.cli.demo import _demo_checks

    judges(clean_env / "pixelmill-data")  # built already: the demo does not build them again
    (clean_env / ".env").write_text("# mine\nPIXELMILL_BATCH_SIZE=2")  # kept, and no newline at its end
    before = invoke(
        "submit", str(ROOT / "examples/catalogue.csv"), "--key", "sku", "--template", "{title}", "--dry-run"
    )
    assert before.exit_code == 2 and "PIXELMILL_IMAGE_CHECKER is not set" in before.output
    assert "./.env" in before.output and "pixelmill demo" in before.output  # says where the demo's settings are

    _demo_checks(get_settings(), out)  # the demo's settings step, printing as the demo does
    printed = capsys.readouterr().out
    env_file = clean_env / ".env"
    assert f"to {env_file.resolve()}:" in printed and "PIXELMILL_IMAGE_CHECKER" in printed
    assert env_file.read_text().startswith("# mine\nPIXELMILL_BATCH_SIZE=2\nPIXELMILL_IMAGE_CHECKER=")

    after = invoke("submit", str(ROOT / "examples/catalogue.csv"), "--key", "sku", "--template", "{title}", "--dry-run")
    assert after.exit_code == 0, after.output
    assert "40 rows → 40 items" in after.output


def test_the_demo_keeps_a_users_own_setting(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pixelmill.cli.demo import hand_over

    (clean_env / ".env").write_text("PIXELMILL_CLIP_MODEL=/mine/clip\n")
    hand_over({"PIXELMILL_CLIP_MODEL": "/demo/clip", "PIXELMILL_IMAGE_CHECKER": "/demo/checker"}, out)
    assert (
        clean_env / ".env"
    ).read_text() == "PIXELMILL_CLIP_MODEL=/mine/clip\nPIXELMILL_IMAGE_CHECKER=/demo/checker\n"
    assert "kept PIXELMILL_CLIP_MODEL=/mine/clip" in capsys.readouterr().out


# --- settings ------------------------------------------------------------------------------------------------


def test_a_typo_in_dotenv_gets_a_did_you_mean_with_file_and_line(clean_env: Path) -> None:
    (clean_env / ".env").write_text("PIXELMILL_IMAGE_CHECKER=none\n\n# batch\nPIXELMILL_BATCHSIZE=3\n")
    result = invoke("broker", "status")
    assert (
        "warning: .env:4: unknown variable PIXELMILL_BATCHSIZE is ignored; did you mean PIXELMILL_BATCH_SIZE?"
        in result.output
    ), result.output


def test_pixelmill_env_file_names_the_settings_file_or_turns_it_off(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("PIXELMILL_BATCH_SIZE=3\n")
    (clean_env / "night.env").write_text("PIXELMILL_BATCH_SIZE=5\nPIXELMILL_BATCHSIZE=1\n")
    get_settings.cache_clear()
    assert get_settings().batch_size == 3  # ./.env by default
    monkeypatch.setenv("PIXELMILL_ENV_FILE", "night.env")
    get_settings.cache_clear()
    assert get_settings().batch_size == 5
    assert "warning: night.env:2: unknown variable PIXELMILL_BATCHSIZE" in invoke("broker", "status").output
    monkeypatch.setenv("PIXELMILL_ENV_FILE", "")  # what the test suite sets for every process it starts
    get_settings.cache_clear()
    assert get_settings().batch_size == Settings.model_fields["batch_size"].default
    assert "unknown variable" not in invoke("broker", "status").output


def test_serve_masks_a_bare_token(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "Zq8rT0kPw2Lx9Vb4Nc7Hs1Jd6Fg3Ma5E"  # 32 characters, no `name:`
    monkeypatch.setenv("PIXELMILL_API_TOKENS", token)
    result = invoke("serve")
    assert result.exit_code == 2 and "PIXELMILL_API_TOKENS" in result.output, result.output
    assert token not in result.output and token[4:12] not in result.output
    assert "Zq8r***" in result.output


def test_a_postgres_url_names_the_accepted_form(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELMILL_DATABASE_URL", "postgres://u:s3cr3t-Pa55@db/x")
    result = invoke("jobs")
    assert result.exit_code == 2 and "postgresql+psycopg://user:***@host" in result.output, result.output
    assert "s3cr3t-Pa55" not in result.output


def test_broker_status_exits_1_when_not_running(clean_env: Path) -> None:
    result = invoke("broker", "status")
    assert result.exit_code == 1 and "not running" in result.output, result.output


# --- the front door ------------------------------------------------------------------------------------------


def test_a_request_with_a_bad_size_and_a_wrong_key_reports_both(tmp_path: Path) -> None:
    from producer.request import Options, RequestProblems, make_request

    settings = Settings(data_dir=tmp_path, image_checker="none")
    rows = [{"sku": "A-1", "title": "mug"}, {"sku": "A-2", "title": "cup"}]
    with pytest.raises(RequestProblems) as caught:
        make_request(
            settings, Options(size="3x3", key="id", template="photo of {title}"), rows=rows, tenant_id=DEFAULT_TENANT_ID
        )
    problems = caught.value.problems
    assert any("field 'size'" in p and "3x3" in p for p in problems), problems
    assert any("'id'" in p for p in problems), problems


def test_http_items_accepts_cancelled_and_404s_carry_no_cli_hint(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from conftest import LOOPBACK
    from contract.schema import Job
    from pixelmill.api.http import create_app

    settings = Settings(data_dir=tmp_path, image_checker="none")
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as client:
        from contract.ledger import Ledger

        ledger = Ledger(settings)
        with ledger.session() as session:
            job = Job(tenant_id=DEFAULT_TENANT_ID, name="n", model="acme/sd15", params={}, counts={})
            session.add(job)
            session.flush()
            job_id = job.id
        ledger.close()
        ok = client.get(f"/v1/jobs/{job_id}/items", params={"state": "cancelled"})
        assert ok.status_code == 200 and ok.json()["items"] == [], ok.text
        bad = client.post(
            "/v1/jobs",
            json={
                "v": 1,
                "request_id": "both",
                "rows": [{"sku": "A-1", "title": "mug"}],
                "key": "id",
                "template": "photo of {title}",
                "options": {"size": "65x64"},
            },
        )
        problems = bad.json()["problems"]
        assert bad.status_code == 422 and len(problems) == 2, problems
        assert problems[0].startswith("request: field 'size': width 65") and "field 'id'" in problems[1], problems
        for path in ("/v1/jobs/999", "/v1/jobs/999/items?state=cancelled", "/v1/jobs/999/cancel"):
            missing = client.post(path) if path.endswith("cancel") else client.get(path)
            assert missing.status_code == 404 and missing.json() == {"detail": "no job 999"}, (path, missing.text)


# --- a real submit: one-line summary, catalogue in jobs/status, nothing left by a failed first try -----------


@pytest.fixture
def installation(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data = clean_env / "data"
    monkeypatch.setenv("PIXELMILL_DATA_DIR", str(data))
    monkeypatch.setenv("PIXELMILL_IMAGE_CHECKER", "none")
    monkeypatch.setenv("PIXELMILL_MODEL", "acme/sd15")  # a hub id: submit queues it, no worker needed
    yield data
    from contract.broker import EmbeddedRedis

    if data.is_dir():
        EmbeddedRedis(data.resolve()).stop()


def test_a_submit_shows_one_line_and_its_catalogue_in_jobs_and_status(installation: Path) -> None:
    catalogue = installation.parent / "shop.csv"
    catalogue.write_text("sku,title\nA-1,mug\nA-2,cup\n")
    name = "n" * 150
    result = invoke(
        "submit", str(catalogue), "--key", "sku", "--template", "{title}", "--name", name, "--catalogue", "shop"
    )
    assert result.exit_code == 0, result.output
    summary = [line for line in result.output.splitlines() if line.startswith("job 1 (")]
    assert summary and "blocked by the prompt filter; catalogue shop: 2 new" in summary[0], result.output
    assert f"job 1 ({name}): 2 items queued (the scheduler sends them to the workers), 0 skipped" in summary[0], (
        result.output
    )
    listed = invoke("jobs")
    assert name in listed.output and " shop " in listed.output, listed.output
    assert json.loads(invoke("status", "1", "--json").output)["catalogue"] == "shop"
    assert re.search(r"\n *catalogue +shop *\n", invoke("status", "1").output)


@pytest.mark.parametrize("exists", [False, True], ids=["no-data-dir", "empty-data-dir"])
def test_a_failed_first_submit_leaves_no_ledger(installation: Path, exists: bool) -> None:
    if exists:
        installation.mkdir()
    catalogue = installation.parent / "bad.csv"
    catalogue.write_text("sku,title\nA-1,mug\nA-1,cup\n")  # a duplicate key
    result = invoke("submit", str(catalogue), "--key", "sku", "--template", "{title}")
    assert result.exit_code == 2 and "nothing was submitted" in result.output, result.output
    assert (list(installation.iterdir()) == []) if exists else not installation.exists()


def test_a_worker_still_loading_its_model_is_not_reported_missing(tmp_path: Path) -> None:
    """The demo and a first `submit --wait` start a worker and submit at once: while that worker is alive and
    loading the model, there is no "no worker has served this model's queue" warning; after LOAD_GRACE there is
    one that says it is still loading."""
    from datetime import timedelta

    from sqlalchemy import update

    from contract.ledger import Ledger
    from contract.queue import queue_for
    from contract.schema import Worker, utcnow
    from producer.status import LOAD_GRACE, no_worker_line

    ledger = Ledger(Settings(data_dir=tmp_path))
    now = utcnow()
    with ledger.session() as session:
        queue = queue_for("acme/sd15")
        assert no_worker_line(session, "acme/sd15", since=now, stale_after=60) is not None  # nobody at all
        session.add(Worker(node="gpu0@h", queue=queue, model="acme/sd15", state="loading", started=now, last_seen=now))
        session.flush()
        assert no_worker_line(session, "acme/sd15", since=now, stale_after=60) is None
        session.execute(update(Worker).values(started=now - timedelta(seconds=LOAD_GRACE + 5)))
        line = no_worker_line(session, "acme/sd15", since=now, stale_after=60)
        assert line is not None and "loading this model for" in line, line
        session.execute(update(Worker).values(last_seen=now - timedelta(seconds=120)))  # its heartbeat stopped
        line = no_worker_line(session, "acme/sd15", since=now, stale_after=60)
        assert line is not None and line.startswith("no worker has served"), line


def test_a_missing_model_directory_says_how_to_build_one(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer's first submit outside the demo names a model directory that does not exist (the default one
    under the data dir): the CLI says how to get one there, not only that it is missing."""
    monkeypatch.setenv("PIXELMILL_DATA_DIR", str(clean_env / "data"))
    monkeypatch.setenv("PIXELMILL_IMAGE_CHECKER", "none")
    (clean_env / "shop.csv").write_text("sku,title\nA-1,mug\n")
    result = invoke("submit", "shop.csv", "--key", "sku", "--template", "{title}")
    model = clean_env / "data" / "models" / "tiny"
    assert result.exit_code == 2 and f"pixelmill model tiny {model}" in result.output, result.output
    assert "Traceback" not in result.output and not (clean_env / "data").exists()
    hub = invoke("submit", "shop.csv", "--key", "sku", "--template", "{title}", "--model", "no-such-model")
    assert hub.exit_code == 2 and "pixelmill model tiny" not in hub.output, hub.output  # not a path: no build hint


# --- help and pipes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [[], ["tenants"], ["db"]], ids=["pixelmill", "tenants", "db"])
def test_each_commands_summary_reads_as_one_sentence_in_the_help(
    group: list[str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A docstring's own line breaks do not cut a command's summary in the group's help: at 400 columns every
    summary is one line, its whole first paragraph."""
    import inspect

    import typer.main

    monkeypatch.setenv("COLUMNS", "400")
    result = invoke(*group, "--help")
    assert result.exit_code == 0, result.output
    command = typer.main.get_command(app)
    for name in group:
        command = command.commands[name]  # type: ignore[attr-defined]
    lines = [" ".join(line.strip("│ ").split()) for line in result.output.splitlines()]
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        summary = " ".join(inspect.cleandoc(sub.help or "").split("\n\n")[0].split())
        assert f"{name} {summary}" in lines, (name, summary)


def test_a_reader_that_goes_away_is_not_reported_as_a_broker_error(clean_env: Path) -> None:
    """`pixelmill submit ... --dry-run --json | head -c 600`: the pipe closes under the command; it stops as
    `jobs | head` does (exit 1, no message), not with "cannot reach the broker: Broken pipe"."""
    import os
    import subprocess

    (clean_env / "catalogue.csv").write_text("sku,prompt\nA1,a red mug\nA2,a green bottle\n")
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pixelmill", "submit", "catalogue.csv", "--key", "sku", "--dry-run", "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=clean_env,
            env={**os.environ, "PIXELMILL_DATA_DIR": str(clean_env / "data"), "PIXELMILL_IMAGE_CHECKER": "none"},
        )
    finally:
        os.close(write)
    assert proc.returncode == 1, proc.stderr
    assert "error" not in proc.stderr.lower() and "broker" not in proc.stderr, proc.stderr
