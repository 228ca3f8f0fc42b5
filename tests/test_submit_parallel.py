"""A large submission's prompt filter in helper processes (producer/screening.py) and the pipelined write: the
same verdicts, the same items and the same skips as the in-process path, and a dead helper costs nothing but
time. In process, with the embedded broker."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import servers  # tests/servers.py (tests/ is on sys.path, as for conftest.py)
from sqlalchemy import func, select

from contract import promptfilter
from contract.broker import EmbeddedRedis
from contract.ledger import Ledger
from contract.schema import Item, State
from contract.settings import Settings
from producer.catalogue import Defaults
from producer.planning import BATCH, preview_request
from producer.request import SubmitRequest
from producer.screening import PARALLEL_MIN, Screen
from producer.submit import submit_request

CORPORA = Path(__file__).parent / "data"
DEFAULTS = Defaults(template=None, width=64, height=64, steps=4)


def corpus_prompts() -> list[str]:
    prompts = []
    for name in ("prompt_corpus_benign.tsv", "prompt_corpus_evasive.tsv"):
        with open(CORPORA / name, encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh, delimiter="\t"):
                if row and row[0] != "split":  # the header
                    prompts.append(row[-1])
    return prompts


def test_helpers_give_the_verdicts_of_this_process() -> None:
    prompts = corpus_prompts()
    assert len(prompts) >= PARALLEL_MIN
    here = [promptfilter.load(("builtin",)).check(p) for p in prompts]
    screen = Screen(("builtin",), processes=2)
    try:
        futures = [screen.check(prompts[i : i + 700]) for i in range(0, len(prompts), 700)]
        assert len(screen._helpers) == 2, "a batch of 500+ prompts starts the helpers"
        got = [
            v for i, f in zip(range(0, len(prompts), 700), futures) for v in screen.verdicts(f, prompts[i : i + 700])
        ]
    finally:
        screen.close()
    # The same decision and category for every prompt. Which listed term a match names may differ between
    # processes (set order follows the per-process hash seed) in a handful of prompts: 2 of 3,940 here.
    assert [v and v.category for v in got] == [v and v.category for v in here]
    assert sum(v is not None for v in got) > 1000  # the evasive corpus: most of it is refused


def test_any_text_reaches_the_helpers() -> None:
    """Prompts go to the helpers as ASCII JSON: lone surrogates (which a JSON catalogue or the Python API can
    carry, and UTF-8 cannot) and every script come back with the verdicts of this process, not a stalled pipe."""
    prompts = [f"mug {i} \ud800 red" for i in range(300)] + [f"чашка {i} 🟥 naked" for i in range(300)]
    here = [promptfilter.load(("builtin",)).check(p) for p in prompts]
    screen = Screen(("builtin",), processes=1)
    try:
        future = screen.check(prompts)
        assert len(screen._helpers) == 1
        got = future.result(timeout=60)  # a helper answer, not the fallback
    finally:
        screen.close()
    assert [v and v.category for v in got] == [v and v.category for v in here]
    assert sum(v is not None for v in got) >= 300


def test_a_killed_helper_costs_time_not_verdicts() -> None:
    prompts = corpus_prompts()
    here = [promptfilter.load(("builtin",)).check(p) for p in prompts]
    screen = Screen(("builtin",), processes=1)
    try:
        future = screen.check(prompts)
        assert len(screen._helpers) == 1
        os.kill(screen._helpers[0].proc.pid, signal.SIGKILL)  # while it still starts (imports, building the filter)
        assert screen.verdicts(future, prompts) == here  # checked here, by this process's own filter
        assert screen.processes == 0 and not screen._helpers  # later batches are checked here
        assert screen.verdicts(screen.check(prompts[:600]), prompts[:600]) == here[:600]
    finally:
        screen.close()


def catalogue_rows(n: int) -> list[dict[str, object]]:
    """`n` rows across several batches: blocked prompts in the later ones, and rows doing identical work (same
    prompt and seed) on either side of batch boundaries, which must be planned once."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        prompt = f"studio photo of ceramic mug model {i}, white background"
        if i % 997 == 500:
            prompt = f"a naked woman holding mug {i}"
        row: dict[str, object] = {"id": f"SKU-{i:06d}", "prompt": prompt}
        if i % BATCH in (0, BATCH - 1):  # the same work as the row just before or after a boundary
            row.update(prompt="studio photo of the shared mug", seed=7)
        rows.append(row)
    return rows


@pytest.mark.parametrize("processes", [0, 1])
def test_pipelined_submit_plans_like_the_dry_run(tmp_path: Path, processes: int) -> None:
    settings = Settings(data_dir=tmp_path, submit_processes=processes)
    rows = catalogue_rows(5 * BATCH + 123)
    request = SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", tenant_id=1, blocklists=("builtin",))
    preview = preview_request(settings, None, request)
    ledger = Ledger(settings)
    try:
        result = submit_request(
            settings,
            ledger,
            SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", tenant_id=1, blocklists=("builtin",)),
        )
        assert (result.rows, result.items, result.skipped, result.blocked) == (
            preview.rows,
            preview.items,
            preview.skipped,
            preview.blocked,
        )
        assert result.blocked == sum(1 for r in rows if "naked" in str(r["prompt"]))
        assert result.skipped == sum(1 for r in rows if r.get("seed") == 7) - 1
        with ledger.session(readonly=True) as session:
            states = dict(
                session.execute(
                    select(Item.state, func.count()).where(Item.job_id == result.job).group_by(Item.state)
                ).all()
            )
            hashes = session.scalar(select(func.count(func.distinct(Item.content_hash))))
        assert states == {State.pending: result.items, State.blocked: result.blocked}  # the backlog: nothing sent
        assert hashes == result.items + result.blocked  # identical work never inserted twice

        again = submit_request(
            settings,
            ledger,
            SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", tenant_id=1, blocklists=("builtin",)),
        )
        assert (again.items, again.skipped, again.messages) == (0, len(rows) - result.blocked, 0)
    finally:
        ledger.close()
        EmbeddedRedis(tmp_path).stop()


@pytest.mark.parametrize("fault", ["bad last row", "failed insert"])
def test_a_failure_mid_stream_leaves_nothing(tmp_path: Path, fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing with the writer thread and the helpers busy: a bad last row (the reader's CatalogueError
    at the end of the stream) or an insert that fails on the third batch rolls back the job and every item."""
    from contract import transitions
    from contract.schema import Job
    from producer.catalogue import CatalogueError

    settings = Settings(data_dir=tmp_path, submit_processes=1)
    rows = catalogue_rows(4 * BATCH)
    expected: type[Exception] = CatalogueError
    if fault == "bad last row":
        rows.append({"id": "SKU-LAST", "prompt": ""})
    else:
        calls = []
        real = transitions.add_items

        def failing(*args: object, **kwargs: object) -> list[int]:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("disk full")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(transitions, "add_items", failing)
        expected = RuntimeError
    ledger = Ledger(settings)
    try:
        with pytest.raises(expected):
            submit_request(
                settings,
                ledger,
                SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", tenant_id=1, blocklists=("builtin",)),
            )
        with ledger.session(readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0
            assert session.scalar(select(func.count()).select_from(Item)) == 0
    finally:
        ledger.close()
        EmbeddedRedis(tmp_path).stop()


def test_a_script_without_a_main_guard_submits_once(tmp_path: Path) -> None:
    """The helpers are plain `python -m producer.screening` processes: a submission script with no
    `if __name__ == "__main__"` guard is not imported again in them (multiprocessing's spawn would run it, and
    submit a second job, in every helper)."""
    import subprocess
    import sys

    script = tmp_path / "nightly.py"
    script.write_text(
        "from pathlib import Path\n"
        "from contract.ledger import Ledger\n"
        "from contract.settings import Settings\n"
        "from producer.catalogue import Defaults\n"
        "from producer.request import SubmitRequest\n"
        "from producer.submit import submit_request\n"
        f"settings = Settings(data_dir=Path({str(tmp_path / 'data')!r}), submit_processes=2)\n"
        "rows = [{'id': f'SKU-{i}', 'prompt': f'studio photo of mug {i}'} for i in range(3000)]\n"
        "request = SubmitRequest(rows=rows, defaults=Defaults(template=None, width=64, height=64, steps=4),\n"
        "                        model='org/m', tenant_id=1, blocklists=('builtin',))\n"
        "print(submit_request(settings, Ledger(settings), request).items)\n"
    )
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["3000"]
        ledger = Ledger(Settings(data_dir=tmp_path / "data"))
        with ledger.session(readonly=True) as session:
            from contract.schema import Job

            assert session.scalar(select(func.count()).select_from(Job)) == 1
            assert session.scalar(select(func.count()).select_from(Item)) == 3000
        ledger.close()
    finally:
        EmbeddedRedis(tmp_path / "data").stop()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def test_a_submit_killed_while_writing_leaves_nothing_and_no_helper(tmp_path: Path) -> None:
    """SIGKILL of `pixelmill submit` in the middle of the write stage (helpers checking prompts, the writer
    thread inserting, nothing committed): no job, no item, no message; its helpers exit on their closed stdin;
    and the same catalogue then submits whole."""
    import subprocess
    import sys
    import time

    from contract.queue import make_celery, queue_depth, queue_for
    from contract.schema import Job

    rows = 200_000
    catalogue = tmp_path / "nightly.csv"
    with open(catalogue, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "title"])
        out.writerows([f"SKU-{i}", f"mug {i}"] for i in range(rows))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PIXELMILL_DATA_DIR": str(data),
        "PIXELMILL_SUBMIT_PROCESSES": "1",
        "PIXELMILL_IMAGE_CHECKER": "none",
        "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true",
    }
    argv = [sys.executable, "-m", "pixelmill", "submit", str(catalogue), "--template", "photo of {title}"]
    argv += ["--model", str(model), "--size", "64x64", "--steps", "4", "--json"]
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        helpers: list[int] = []
        deadline = time.monotonic() + 60
        while not helpers and proc.poll() is None and time.monotonic() < deadline:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                helpers = [int(pid) for pid in fh.read().split()]
            time.sleep(0.02)
        assert helpers, "the submit started no helper process"
        # Kill once the helper has built its filter (~0.4 s of CPU) and checked a good many prompts: verdicts
        # are coming back, so batches are being inserted (200k prompts are ~3 s of helper CPU).
        while _cpu_seconds(helpers[0]) < 0.9 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the submit finished before it could be killed; make the catalogue larger"
        proc.send_signal(signal.SIGKILL)
        printed, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL and printed == b""
        deadline = time.monotonic() + 20
        while any(map(servers.pid_alive, helpers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(servers.pid_alive, helpers)), "a helper outlived its submit"

        settings = Settings(data_dir=data)
        ledger = Ledger(settings)
        with ledger.session(readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0
            assert session.scalar(select(func.count()).select_from(Item)) == 0
        ledger.close()
        app = make_celery(settings)
        assert queue_depth(app, queue_for(str(model))) == 0

        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout.strip().splitlines()[-1])
        assert (result["job"], result["items"]) == (1, rows)
        assert queue_depth(app, queue_for(str(model))) == result["messages"]
    finally:
        EmbeddedRedis(data).stop()
