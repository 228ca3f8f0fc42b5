"""A large submission's prompt filter in helper processes (producer/screening.py) and the pipelined write: the
same verdicts, the same items and the same skips as the in-process path, and a dead helper costs nothing but
time. In process, with the embedded broker."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pixelmill import promptfilter
from pixelmill.broker import EmbeddedRedis
from pixelmill.ledger import Ledger
from pixelmill.schema import Item, State
from pixelmill.settings import Settings
from producer.catalogue import Defaults
from producer.screening import PARALLEL_MIN, Screen
from producer.submit import BATCH, SubmitRequest, preview_request, submit_request

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
    request = SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", blocklists=("builtin",))
    preview = preview_request(settings, None, request)
    ledger = Ledger(settings)
    try:
        result = submit_request(
            settings, ledger, SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", blocklists=("builtin",))
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
        assert states == {State.queued: result.items, State.blocked: result.blocked}
        assert hashes == result.items + result.blocked  # identical work never inserted twice

        again = submit_request(
            settings, ledger, SubmitRequest(rows=rows, defaults=DEFAULTS, model="org/m", blocklists=("builtin",))
        )
        assert (again.items, again.skipped, again.messages) == (0, len(rows) - result.blocked, 0)
    finally:
        ledger.close()
        EmbeddedRedis(tmp_path).stop()
