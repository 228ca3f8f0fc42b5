"""Hostile inputs to today's reader, request fields, demo and routes: each bounded in time, memory and reach."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from test_friction import clean_env, installation, invoke

from contract.settings import get_settings
from contract.tenants import DEFAULT_TENANT_ID
from producer.catalogue import CatalogueError, Defaults, Limits, UsageError, quotes, read_catalogue
from producer.options import Options, option_problems

__all__ = ["clean_env", "installation"]  # the fixtures, shared with test_friction


def test_a_record_of_many_multiline_cells_is_scanned_in_linear_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stray-quote span check ran every ~10 lines over the whole record so far: a 1 MiB row of 95k
    nine-line quoted cells took hours. Now each check resumes at the open cell: text scanned ~ the file."""
    cell = '"' + "\n" * 8 + '"'
    data = "id,title\n1," + ",".join([cell] * 2000) + "\n"
    path = tmp_path / "cells.csv"
    path.write_text(data)
    scanned = [0]
    real = quotes.quoted_cells

    def counting(text: str, *args: object) -> object:
        scanned[0] += len(text)
        return real(text, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("producer.catalogue.csv_reader.quoted_cells", counting)  # what the reader calls
    with pytest.raises(CatalogueError, match="row has 2001 cells for 2 columns"):
        read_catalogue(path, Defaults(template="{title}"), Limits())
    assert scanned[0] < 4 * len(data)


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ({"size": "\x00"}, "NUL byte"),
        ({"seed": "\ud800"}, "lone surrogate"),
        ({"\ud800": "x"}, "lone surrogate"),
    ],
)
def test_a_columns_value_the_ledger_cannot_store_is_refused(columns: dict[str, str], words: str) -> None:
    """A column name echoed into a rejection (`no such column ... --column size=\\x00`) must be storable: the
    text options were checked for NUL and lone surrogates, the `columns` map's names were not."""
    problems = option_problems(Options(columns=columns))
    assert [name for name, _ in problems] == ["columns"]
    assert words in problems[0][1]


def test_a_huge_columns_key_is_not_echoed_whole() -> None:
    """An unknown override name is quoted in the problem, which goes back in the 422 and into the stored
    job.rejected event: a 100 KB key made a 200 KB message."""
    problems = option_problems(Options(columns={"x" * 100_000: "a"}))
    assert [name for name, _ in problems] == ["columns"]
    assert len(problems[0][1]) < 300
    with pytest.raises(UsageError, match="not a per-row override column"):
        Defaults(template="{t}", columns=((["size"], "a"),))  # type: ignore[arg-type]


# --- a failed first submit removes only what it created ------------------------------------------------------


def _failing_submit(monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> None:
    """submit_request runs `meanwhile` (another program at work in the data dir), then fails as on a bad row."""
    import producer.submit

    def submit(settings: Any, ledger: Any, request: Any) -> Any:
        meanwhile(settings.data_path)
        raise CatalogueError([])

    monkeypatch.setattr(producer.submit, "submit_request", submit)


@pytest.mark.parametrize("exists", [False, True], ids=["new-data-dir", "home-as-data-dir"])
def test_a_failed_first_submit_keeps_what_another_program_wrote_meanwhile(
    installation: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    """PIXELMILL_DATA_DIR=$HOME, or a new dir a worker also writes to: undo removed every entry new since the
    submit began (rmtree of the whole dir when it was new), including a shell's history written meanwhile."""
    if exists:
        installation.mkdir()
        (installation / ".profile").write_text("keep\n")
    _failing_submit(monkeypatch, lambda data: (data / ".bash_history").write_text("ls\n"))
    catalogue = installation.parent / "ok.csv"
    catalogue.write_text("sku,title\nA-1,mug\n")
    result = invoke("submit", str(catalogue), "--key", "sku", "--template", "{title}")
    assert result.exit_code == 2, result.output
    left = sorted(p.name for p in installation.iterdir())
    assert left == ([".bash_history", ".profile"] if exists else [".bash_history"])


def test_a_failed_first_submit_keeps_a_ledger_it_cannot_read(
    installation: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another submit committed a job into the same new ledger, and the undo's "any job?" check failed (the
    database locked): the failure was suppressed and the whole data dir, that job included, removed."""
    from contract.ledger import Ledger

    def other_submit_then_lock(data: Path) -> None:
        from contract.schema import Job

        other = Ledger(get_settings())
        with other.session() as session:
            session.add(Job(tenant_id=DEFAULT_TENANT_ID, name="theirs", model="acme/sd15", params={}))
        other.close()

        def locked(self: Any, readonly: bool = False) -> Any:
            raise OSError("database is locked")

        monkeypatch.setattr(Ledger, "session", locked)

    _failing_submit(monkeypatch, other_submit_then_lock)
    catalogue = installation.parent / "ok.csv"
    catalogue.write_text("sku,title\nA-1,mug\n")
    result = invoke("submit", str(catalogue), "--key", "sku", "--template", "{title}")
    assert result.exit_code == 2, result.output
    assert (installation / "pixelmill.db").exists()


# --- the demo's .env ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["/home/o'brien/demo", "/a\\'b", "/a\\b", "/a b#c $HOME\n", '/q"uote'])
def test_the_demo_env_file_reads_back_each_value_exactly(tmp_path: Path, value: str) -> None:
    """A data dir under O'Brien's home made `PIXELMILL_X='/home/o'brien/...'`: python-dotenv cannot parse that
    line, so later commands ran without the demo's checker."""
    from dotenv import dotenv_values
    from rich.console import Console

    from pixelmill.cli.demo import hand_over

    env = tmp_path / ".env"
    hand_over({"PIXELMILL_IMAGE_CHECKER": value}, Console(file=io.StringIO()), env)
    assert dotenv_values(env) == {"PIXELMILL_IMAGE_CHECKER": value}


def test_the_demo_does_not_write_a_value_dotenv_would_expand(tmp_path: Path) -> None:
    from rich.console import Console

    from pixelmill.cli.demo import hand_over

    env, shown = tmp_path / ".env", io.StringIO()
    hand_over({"PIXELMILL_IMAGE_CHECKER": "/d/${HOME}/c"}, Console(file=shown, width=400), env)
    assert not env.exists() or "PIXELMILL_IMAGE_CHECKER" not in env.read_text()
    assert "set: PIXELMILL_IMAGE_CHECKER='/d/${HOME}/c'" in shown.getvalue()


@pytest.mark.parametrize("raw", ["Zq8vR2mN5xT1pL7kW3:ci", "ok:0123456789abcdef,Zq8vR2mN5xT1pL7kW3:a:b"])
def test_a_token_written_before_its_name_is_not_echoed(raw: str) -> None:
    """`token:name` (the order reversed) made the token the entry's "name", which the error showed whole."""
    from pixelmill.api.http import parse_tokens

    with pytest.raises(ValueError, match="PIXELMILL_API_TOKENS") as caught:
        parse_tokens(raw)
    assert "Zq8vR2mN5xT1pL7kW3" not in str(caught.value)
    assert "mN5x" not in str(caught.value)
