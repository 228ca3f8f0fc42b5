"""The prompt filter: evasions are caught, catalogue language is not, and a blocked item costs no generation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import Env, write_catalogue
from pixelmill.promptfilter import PromptFilter, load, normalise
from pixelmill.queue import make_celery, queue_depth
from pixelmill.schema import Item, State

DATA = Path(__file__).parent / "data"


def corpus(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_corpus_rates(capsys: pytest.CaptureFixture[str]) -> None:
    """Every evasive variant is blocked and no benign catalogue prompt is."""
    prompt_filter = load(("builtin",))
    evasive, benign = corpus("evasive_prompts.txt"), corpus("benign_prompts.txt")
    assert len(evasive) >= 60 and len(benign) >= 200
    missed = [p for p in evasive if prompt_filter.check(p) is None]
    false_positives = [(p, prompt_filter.check(p)) for p in benign if prompt_filter.check(p) is not None]
    with capsys.disabled():
        print(f"\nprompt filter: blocked {len(evasive) - len(missed)}/{len(evasive)} evasive variants, "
              f"{len(false_positives)}/{len(benign)} benign prompts")
    assert missed == [] and false_positives == []


@pytest.mark.parametrize(("text", "expected"), [
    ("ＮＵＤＥ", "nude"),  # NFKC
    ("n\u200bu\u00adde", "nude"),  # zero-width space, soft hyphen
    ("nu\u0301de", "nude"),  # combining accent
    ("nudе", "nude"),  # Cyrillic е
    ("p0rn", "porn"),  # leetspeak inside a word
    ("iPhone 15, size 10", "iphone 15, size 10"),  # numbers stay numbers
])
def test_normalisation_undoes_evasions(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_matches_report_category_and_term_and_lists_can_be_replaced(tmp_path: Path) -> None:
    builtin = load(("builtin",))
    found = builtin.check("a s.w.a.s.t.i.k.a flag")
    assert found is not None and (found.category, found.term) == ("hate", "swastika")
    assert found.as_dict() == {"stage": "prompt", "category": "hate", "term": "swastika"}
    assert builtin.check("nude heels") is None and builtin.check("nude woman in nude heels") is not None

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "brands.txt").write_text("# competitor names\nacme corp\n")
    own = PromptFilter.from_sources([str(lists)])
    assert own.check("logo of ACME   Corp.") is not None and own.check("nude model") is None  # replaced
    both = PromptFilter.from_sources(["builtin", str(lists / "brands.txt")])  # extended
    assert both.check("a-c-m-e corp mug").category == "brands" and both.check("nude model") is not None  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError, match="PIXELMILL_PROMPT_BLOCKLISTS"):
        PromptFilter.from_sources([str(tmp_path / "missing.txt")])


def test_blocked_rows_end_blocked_with_their_reason_and_are_never_queued(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 6)
    text = catalogue.read_text().replace("ceramic mug model 2,", "n.u.d.e model 2,")
    catalogue.write_text(text.replace("ceramic mug model 4,", "Sussex mug model 4,"))

    dry = json.loads(env.cli("submit", str(catalogue), "--template", "studio photo of {title}, {color}",
                             "--key", "sku", "--dry-run", "--json").stdout)
    assert (dry["items"], dry["blocked"]) == (5, 1)

    submitted = env.submit(catalogue)
    assert (submitted["items"], submitted["blocked"], submitted["messages"]) == (5, 1, 2)
    assert queue_depth(make_celery(env.settings()), env.queue) == 2  # 4 + 1 items: the blocked one has none
    with env.ledger().session() as session:
        items = {i.item_key: i for i in session.scalars(select(Item).where(Item.job_id == submitted["job"]))}
    blocked = items["SKU-002"]
    assert blocked.state == State.blocked and blocked.finished_at is not None and blocked.attempts == 0
    assert blocked.block_reason == {"stage": "prompt", "category": "sexual", "term": "nude"}
    assert {i.state for k, i in items.items() if k != "SKU-002"} == {State.queued}
    status = json.loads(env.cli("status", str(submitted["job"]), "--json").stdout)
    assert status["blocked"] == 1 and status["blocked_by"] == {"prompt:sexual": 1}
    detail = env.cli("status", str(submitted["job"])).stdout
    assert re.search(r"blocked\s+1 \(prompt:sexual 1\)", detail), detail

    # With the filter turned off (empty setting), the same prompt is queued, and the job records that.
    env.vars["PIXELMILL_PROMPT_BLOCKLISTS"] = ""
    unfiltered = env.submit(catalogue, "--seed", "1")
    assert (unfiltered["items"], unfiltered["blocked"]) == (6, 0)
    from pixelmill.schema import Job

    with env.ledger().session() as session:
        assert session.get(Job, unfiltered["job"]).params["prompt_filter"] == []  # type: ignore[union-attr]
        assert session.get(Job, submitted["job"]).params["prompt_filter"] == ["builtin"]  # type: ignore[union-attr]
