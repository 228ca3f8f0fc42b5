"""Every bad input costs nothing and says what to fix: exit 2, no traceback, a message naming the input (option,
PIXELMILL_* variable, file; URLs with their secrets masked), and the ledger and the queues unchanged.

The table runs the CLI in-process (Typer's CliRunner over the real `pixelmill` app, `pixelmill.cli.errors`'
handler included) against one installation that already holds a submitted job; a few cases run as real
subprocesses to check `main()` and the process boundary too.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import Env
from contract.settings import get_settings
from pixelmill.cli import app
from pixelmill.cli.errors import unknown_variables

SECRET = "s3cr3t-Pa55"
CATALOGUE = "sku,title,color\nA-1,mug,red\nA-2,cup,blue\n"

# (id, arguments, extra environment, what the message must name). `{data}` is the installation's data dir,
# `{tmp}` a scratch dir, `{cat}` a good catalogue, `{file}` an existing regular file.
Case = tuple[str, list[str], dict[str, str], str]


def submit(catalogue: str = "{cat}", *, key: str = "sku", template: str = "{title}") -> list[str]:
    """The arguments of a submit (by default, of the test catalogue)."""
    return ["submit", catalogue, "--key", key, "--template", template]


def setting(id_: str, variable: str, value: str, args: list[str] | None = None, names: str | None = None) -> Case:
    """A bad PIXELMILL_* value under `args` (default `jobs`); the message names the variable unless `names` says."""
    return (id_, args or ["jobs"], {variable: value}, names or variable)


SUBMIT = submit()
POSTGRES, REDIS = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/x", f"redis://:{SECRET}@127.0.0.1:1/0"  # unreachable
CASES: list[Case] = [
    # settings and the environment
    setting("data-dir-is-a-file", "PIXELMILL_DATA_DIR", "{file}"),
    setting("data-dir-unwritable", "PIXELMILL_DATA_DIR", "/proc/1/pixelmill-data"),
    setting("data-dir-file-submit", "PIXELMILL_DATA_DIR", "{file}", SUBMIT),
    setting("data-dir-file-broker", "PIXELMILL_DATA_DIR", "{file}", ["broker", "status"], names="{file}"),
    setting("database-url-garbage", "PIXELMILL_DATABASE_URL", "garbage"),
    setting(
        "database-url-unreachable", "PIXELMILL_DATABASE_URL", f"postgresql+psycopg://pixelmill:{SECRET}@127.0.0.1:1/x"
    ),
    setting("database-url-mysql", "PIXELMILL_DATABASE_URL", "mysql://u@h/db"),
    setting("database-url-bad-driver", "PIXELMILL_DATABASE_URL", "postgresql+nosuchdriver://u@h/db"),
    setting("database-url-status", "PIXELMILL_DATABASE_URL", POSTGRES, ["status", "1"]),
    setting("broker-url-foo", "PIXELMILL_BROKER_URL", "foo://", ["reconcile"]),
    setting("broker-url-foo-submit", "PIXELMILL_BROKER_URL", "foo://", SUBMIT),
    setting("broker-unreachable-reconcile", "PIXELMILL_BROKER_URL", REDIS, ["reconcile"]),
    setting("broker-unreachable-ping", "PIXELMILL_BROKER_URL", REDIS, ["ping", "--timeout", "1"]),
    setting("storage-url-ftp", "PIXELMILL_STORAGE_URL", f"ftp://user:{SECRET}@host/images"),
    setting("storage-url-ftp-submit", "PIXELMILL_STORAGE_URL", f"ftp://user:{SECRET}@host/images", SUBMIT),
    setting("storage-url-s3-no-bucket", "PIXELMILL_STORAGE_URL", "s3:///prefix"),
    setting("storage-url-s3-credentials", "PIXELMILL_STORAGE_URL", f"s3://AKIA:{SECRET}@bucket/p"),
    setting("storage-url-file-host", "PIXELMILL_STORAGE_URL", "file://host/images"),
    setting("batch-size-zero", "PIXELMILL_BATCH_SIZE", "0"),
    setting("batch-size-text", "PIXELMILL_BATCH_SIZE", "four"),
    setting("max-attempts-zero", "PIXELMILL_MAX_ATTEMPTS", "0"),
    (
        "soft-limit-above-limit",
        ["jobs"],
        {"PIXELMILL_TASK_SOFT_TIME_LIMIT": "100", "PIXELMILL_TASK_TIME_LIMIT": "50"},
        "PIXELMILL_TASK_SOFT_TIME_LIMIT",
    ),
    setting("lease-below-limit", "PIXELMILL_LEASE_SECONDS", "10"),
    setting("image-format-gif", "PIXELMILL_IMAGE_FORMAT", "gif"),
    setting("image-quality-101", "PIXELMILL_IMAGE_QUALITY", "101"),
    setting("quarantine-under-jobs", "PIXELMILL_QUARANTINE", "jobs/q"),
    setting("c2pa-cert-without-key", "PIXELMILL_C2PA_CERT", "{file}"),
    setting("engine-unknown", "PIXELMILL_ENGINE", "cuda"),
    setting("infra-budget-negative", "PIXELMILL_INFRA_RETRY_BUDGET", "-1"),
    setting("presign-expires-zero", "PIXELMILL_S3_PRESIGN_EXPIRES", "0"),
    setting("reconcile-interval-zero", "PIXELMILL_RECONCILE_INTERVAL", "0"),
    setting("s3-addressing-style", "PIXELMILL_S3_ADDRESSING_STYLE", "sideways"),
    setting("gate-mode-unknown", "PIXELMILL_GATE_MODE", "worst_of"),
    # options
    ("status-interval-negative", ["status", "1", "--watch", "--interval", "-1"], {}, "--interval"),
    ("status-interval-zero", ["status", "1", "--interval", "0"], {}, "--interval"),
    ("status-unknown-job", ["status", "999"], {}, "999"),
    ("status-job-not-a-number", ["status", "abc"], {}, "JOB"),
    ("jobs-limit-negative", ["jobs", "--limit", "-1"], {}, "--limit"),
    ("jobs-limit-zero", ["jobs", "--limit", "0"], {}, "--limit"),
    ("url-expires-negative", ["url", "1", "A-1", "--expires", "-5"], {}, "--expires"),
    ("url-expires-huge", ["url", "1", "A-1", "--expires", "999999999"], {}, "--expires"),
    ("url-variant-negative", ["url", "1", "A-1", "--variant", "-1"], {}, "--variant"),
    ("url-no-such-item", ["url", "1", "NOPE"], {}, "NOPE"),
    ("db-upgrade-bogus", ["db", "upgrade", "bogusrev"], {}, "bogusrev"),
    ("model-tiny-onto-a-file", ["model", "tiny", "{file}"], {}, "{file}"),
    ("model-judges-onto-a-file", ["model", "tiny-judges", "{file}"], {}, "{file}"),
    ("demo-size-3x3", ["demo", "--size", "3x3"], {}, "--size"),
    ("demo-steps-zero", ["demo", "--steps", "0"], {}, "--steps"),
    ("demo-missing-catalogue", ["demo", "--catalogue", "{tmp}/none.csv"], {}, "--catalogue"),
    ("ping-timeout-zero", ["ping", "--timeout", "0"], {}, "--timeout"),
    ("review-not-a-job", ["review", "abc"], {}, "abc"),
    ("review-approve-no-item", ["review", "approve"], {}, "ITEM"),
    ("review-approve-unknown", ["review", "approve", "999999"], {}, "999999"),
    ("worker-engine-unknown", ["worker", "--engine", "foo"], {}, "--engine"),
    ("engine-build-size", ["engine", "build", "--size", "3x3", "--precision", "fp16"], {}, "3x3"),
    ("engine-build-no-prompts", ["engine", "build", "--precision", "int8"], {}, "--calib-prompts"),
    ("unknown-command", ["frobnicate"], {}, "frobnicate"),
    ("nul-in-option", ["jobs", "--limit", "1\x00"], {}, "NUL"),
    # submit
    ("submit-name-too-long", [*SUBMIT, "--name", "n" * 500], {}, "--name"),
    ("submit-name-nul", [*SUBMIT, "--name", "a\x00b"], {}, "NUL"),
    ("submit-template-nul", submit(template="{title}\x00"), {}, "NUL"),
    ("submit-missing-file", submit("{tmp}/none.csv"), {}, "none.csv"),
    ("submit-size-3x3", [*SUBMIT, "--size", "3x3"], {}, "3x3"),
    ("submit-steps-zero", [*SUBMIT, "--steps", "0"], {}, "steps"),
    ("submit-guidance-negative", [*SUBMIT, "--guidance", "-1"], {}, "guidance"),
    ("submit-images-per-item-zero", [*SUBMIT, "--images-per-item", "0"], {}, "images"),
    ("submit-gate-bogus", [*SUBMIT, "--gate", "bogus"], {}, "--gate"),
    ("submit-missing-model", [*SUBMIT, "--model", "{tmp}/no-model"], {}, "no-model"),
    ("submit-template-positional", submit(template="{0}"), {}, "{0}"),
    ("submit-template-no-column", submit(template="{nope}"), {}, "nope"),
    ("submit-key-no-column", submit(key="nope"), {}, "nope"),
    ("submit-bad-rows", submit("{tmp}/bad.csv"), {}, "bad.csv"),
    ("submit-empty-file", submit("{tmp}/empty.csv"), {}, "empty.csv"),
    ("submit-wrong-extension", submit("{tmp}/catalogue.txt"), {}, "catalogue.txt"),
    ("submit-invalid-jsonl", submit("{tmp}/bad.jsonl"), {}, "bad.jsonl"),
    ("submit-name-lone-surrogate", [*SUBMIT, "--name", "night \udcff"], {}, "name: contains a lone surrogate (U+DCFF)"),
    ("submit-lone-surrogate", submit("{tmp}/surrogate.jsonl"), {}, "surrogate.jsonl:2: field 'title'"),
    ("submit-directory", submit("{tmp}"), {}, "{tmp}"),
]


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """One data dir with a ledger, a submitted job (its items pending in the ledger) and bad input files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    env = Env(root / "data", tiny_model)
    env.data_dir.mkdir()
    scratch = root / "scratch"
    scratch.mkdir()
    (scratch / "good.csv").write_text(CATALOGUE)
    (scratch / "a-file").write_text("not a directory")
    (scratch / "bad.csv").write_text("sku,title,color\nA-1,mug,red\nA-1,cup,blue\n,plate,\n")
    (scratch / "empty.csv").write_text("")
    (scratch / "catalogue.txt").write_text(CATALOGUE)
    (scratch / "bad.jsonl").write_text('{"sku": "A-1", "title": "mug"}\n{not json\n')
    (scratch / "surrogate.jsonl").write_text('{"sku": "A-1", "title": "mug"}\n{"sku": "A-2", "title": "cup \\ud800"}\n')
    env.submit(scratch / "good.csv")  # job 1, two items pending
    env.scratch = scratch  # type: ignore[attr-defined]
    yield env
    env.close()


def state(env: Env) -> tuple[Any, ...]:
    """What a bad input must not change: ledger rows, files in the data dir, messages in the broker."""
    db = sqlite3.connect(f"file:{env.data_dir / 'pixelmill.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, state, attempts FROM items ORDER BY id").fetchall()
        jobs = db.execute("SELECT count(*) FROM jobs").fetchone()
    finally:
        db.close()
    files = sorted(
        str(p.relative_to(env.data_dir))
        for p in env.data_dir.rglob("*")
        if not p.name.startswith(("redis", "appendonly", "pixelmill.db-")) and "appendonly" not in str(p)
    )
    import redis

    from contract.broker import EmbeddedRedis

    client = redis.Redis(unix_socket_path=str(EmbeddedRedis(env.data_dir).socket))
    queued = client.llen(env.queue)
    return rows, jobs, files, queued


def fill(text: str, env: Env) -> str:
    scratch = env.scratch  # type: ignore[attr-defined]
    return (
        text.replace("{data}", str(env.data_dir))
        .replace("{tmp}", str(scratch))
        .replace("{cat}", str(scratch / "good.csv"))
        .replace("{file}", str(scratch / "a-file"))
    )


@pytest.mark.parametrize(("args", "extra", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_names_it_and_changes_nothing(
    installation: Env, monkeypatch: pytest.MonkeyPatch, args: list[str], extra: dict[str, str], names: str
) -> None:
    env = installation
    for key in [k for k in os.environ if k.startswith("PIXELMILL_")]:
        monkeypatch.delenv(key)
    for key, value in {**env.vars, **{k: fill(v, env) for k, v in extra.items()}}.items():
        if key.startswith(("PIXELMILL_", "OMP_")):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(env.scratch)  # type: ignore[attr-defined]
    get_settings.cache_clear()
    before = state(env)
    try:
        result = CliRunner().invoke(app, [fill(a, env) for a in args])
    finally:
        get_settings.cache_clear()
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert "Traceback" not in output and result.exception is None or isinstance(result.exception, SystemExit)
    assert fill(names, env).lower() in output.lower(), output
    assert SECRET not in output
    assert state(env) == before


def test_the_table_covers_at_least_60_inputs() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_unknown_variables_warn_with_a_did_you_mean(installation: Env) -> None:
    assert unknown_variables({"PIXELMILL_BATCHSIZE": "3", "PIXELMILL_MODEL": "x", "HOME": "/"}) == [
        "warning: unknown variable PIXELMILL_BATCHSIZE is ignored; did you mean PIXELMILL_BATCH_SIZE?"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pixelmill", "jobs"],
        capture_output=True,
        text=True,
        env={**installation.vars, "PIXELMILL_BATCHSIZE": "3"},
        timeout=120,
    )
    assert proc.returncode == 0 and "did you mean PIXELMILL_BATCH_SIZE?" in proc.stderr


@pytest.mark.parametrize(
    ("args", "extra", "names"),
    [
        (
            ["jobs"],
            {"PIXELMILL_DATABASE_URL": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/x"},
            "PIXELMILL_DATABASE_URL",
        ),
        (["jobs"], {"PIXELMILL_STORAGE_URL": f"ftp://user:{SECRET}@host/x"}, "PIXELMILL_STORAGE_URL"),
        (["db", "upgrade", "bogusrev"], {}, "bogusrev"),
    ],
    ids=["database-unreachable", "storage-ftp", "db-upgrade-bogus"],
)
def test_as_a_process_too(installation: Env, args: list[str], extra: dict[str, str], names: str) -> None:
    """Through `main()` and a real process: two short lines at most, no traceback, secrets masked; `-v` adds
    the traceback (masked too)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pixelmill", *args],
        capture_output=True,
        text=True,
        env={**installation.vars, **extra},
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and names in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    if not extra:
        return
    verbose = subprocess.run(
        [sys.executable, "-m", "pixelmill", "-v", *args],
        capture_output=True,
        text=True,
        env={**installation.vars, **extra},
        timeout=120,
    )
    assert verbose.returncode == 2 and SECRET not in verbose.stderr
    assert "Traceback" in verbose.stderr or "invalid settings" in verbose.stderr
