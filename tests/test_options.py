"""One declaration of the submit options (producer/options.py) and the doors that derive from it: the v1 JSON
Schema is generated from it, the CLI and `Client.submit` agree with it, and the same bad options get the same
problem lines from every door (the CLI, `make_request`, `Client.submit`, the intake queue and HTTP)."""

from __future__ import annotations

import inspect
import json
import os
import struct
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from conftest import DEFAULT_TENANT, LOOPBACK, Env
from contract.settings import get_settings
from contract.tenants import DEFAULT_TENANT_ID
from pixelmill.api import Client, SubmitError
from pixelmill.api.http import create_app
from pixelmill.cli import app
from producer import catalogue
from producer.options import DEFAULTS, declared, option, schema_text, v1_schema
from producer.request import Options, RequestProblems, make_request
from producer.request_v1 import intake, request_schema

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"id": "A-1", "title": "mug"}, {"id": "A-2", "title": "cup"}]
GOOD: dict[str, Any] = {"template": "photo of {title}"}


def test_the_committed_v1_schema_is_the_generated_one() -> None:
    committed = (ROOT / "contract/schemas/request-v1.json").read_text()
    assert committed == schema_text(), "run: python -m producer.options > contract/schemas/request-v1.json"
    assert request_schema() == v1_schema()


def test_the_v1_schema_carries_every_option_with_its_default_and_bounds() -> None:
    schema = v1_schema()["properties"]
    for d in declared():
        found = schema[d.name] if d.spec.v1 == "top" else schema["options"]["properties"][d.name]
        assert found.get("default") == (d.default if d.default is not None else None), d.name
        assert found.get("minimum") == d.spec.minimum and found.get("maximum") == d.spec.maximum, d.name
        assert found.get("maxLength") == d.spec.max_length, d.name
    for name in ("delimiter", "encoding", "columns", "row_overrides"):  # the reader options reach the v1 doors
        assert name in schema
    assert schema["columns"]["propertyNames"]["enum"] == list(catalogue.OVERRIDES)


def test_the_declaration_agrees_with_the_reader() -> None:
    from producer.options import SEED_MAX

    assert SEED_MAX == catalogue.SEED_MAX
    for d in declared():
        assert d.spec.help, d.name
        assert getattr(DEFAULTS, d.name) == d.default


@pytest.mark.parametrize("which", ["implementation", "overload-job", "overload-preview"])
def test_client_submit_takes_the_options_as_declared_keyword_arguments(which: str) -> None:
    """`Client.submit` spells out only what is not an option; the options come as keyword arguments."""
    overloads = typing.get_overloads(Client.submit)
    functions: dict[str, Callable[..., Any]] = {
        "implementation": Client.submit,
        "overload-job": overloads[0],
        "overload-preview": overloads[1],
    }
    function = functions[which]
    params = inspect.signature(function).parameters
    assert set(params) == {"self", "source", "rows", "dry_run", "options"}
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
    assert not {d.name for d in declared()} & set(params)


def test_the_keyword_arguments_type_every_option_as_declared() -> None:
    """`OptionArgs` (the type of `Client.submit`'s `**options`) names every `Options` field with the same type, so
    an editor's completion and a type checker see exactly the declared options."""
    from producer.options import OptionArgs

    hints = typing.get_type_hints(OptionArgs)
    assert hints == typing.get_type_hints(Options)
    assert list(hints) == [d.name for d in declared()]  # and in the declared order
    assert not OptionArgs.__required_keys__  # every option has its default


def test_client_submit_passes_every_option_on_with_its_declared_default(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixelmill.api

    seen: list[Options] = []

    def capture(settings: Any, options: Options, **_: Any) -> Any:
        seen.append(options)
        raise RequestProblems(["captured"])

    monkeypatch.setattr(pixelmill.api, "make_request", capture)
    changed = {d.name: f"value-of-{d.name}" for d in declared()}  # any value: make_request checks them
    with Client(env.settings()) as client:
        for given in ({}, changed):
            with pytest.raises(SubmitError):
                client.submit(rows=ROWS, **given)  # type: ignore[call-overload]  # strings everywhere, on purpose
        with pytest.raises(TypeError, match="'colour'"):
            client.submit(rows=ROWS, colour="red")  # type: ignore[call-overload]  # no such option, on purpose
    assert seen == [DEFAULTS, Options(**changed)]  # type: ignore[arg-type]


def test_the_cli_submit_options_are_the_declared_ones() -> None:
    command = typer.main.get_command(app).commands["submit"]  # type: ignore[attr-defined]
    by_flag = {opt: p for p in command.params for opt in p.opts}
    for d in declared():
        param = by_flag[d.flag]
        assert param.help == d.spec.help, d.name
        if d.name == "row_overrides":
            assert param.default is (not d.default)
        elif d.name == "columns":
            assert param.multiple and not param.default
        else:
            assert param.default == d.default, d.name


# --- the same bad options through every door ----------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], set[str]]] = [
    ("size-3x3", {"size": "3x3"}, {"size"}),
    ("steps-zero", {"steps": 0}, {"steps"}),
    ("steps-201", {"steps": 201}, {"steps"}),
    ("guidance-negative", {"guidance": -1.0}, {"guidance"}),
    ("guidance-51", {"guidance": 51.0}, {"guidance"}),
    ("images-17", {"images_per_item": 17}, {"images_per_item"}),
    ("seed-negative", {"seed": -1}, {"seed"}),
    ("name-300", {"name": "n" * 300}, {"name"}),
    ("name-blank", {"name": "   "}, {"name"}),
    ("template-positional", {"template": "{0}"}, {"template"}),
    ("template-unclosed", {"template": "photo of {title"}, {"template"}),
    ("negative-long", {"negative": "n" * 4001}, {"negative"}),
    ("delimiter", {"delimiter": "x"}, {"delimiter"}),
    ("encoding", {"encoding": "ebcdic"}, {"encoding"}),
    ("column-unknown", {"columns": {"colour": "paint"}}, {"columns"}),
    ("max-retire-150", {"catalogue": "shop", "max_retire": 150.0}, {"max_retire"}),
    ("max-retire-no-catalogue", {"max_retire": 5.0}, {"max_retire"}),
    ("allow-retire-no-catalogue", {"allow_retire": True}, {"allow_retire"}),
    ("candidates", {"gate_attempts": 0, "best_of": 17}, {"gate_attempts", "best_of"}),
    ("catalogue-newline", {"catalogue": "a\nb"}, {"catalogue"}),
    ("gate", {"gate": "bogus"}, {"gate"}),
    # The LoRA shorthand PATH[:SCALE] (producer/options.py split_lora); brand.safetensors is in PIXELMILL_LORA_DIR.
    ("lora-scale-twice-disagrees", {"lora": "brand.safetensors:0.5", "lora_scale": 0.7}, {"lora_scale"}),
    ("lora-suffix-over-2", {"lora": "brand.safetensors:3"}, {"lora"}),
    ("lora-suffix-negative", {"lora": "brand.safetensors:-0.5"}, {"lora"}),
    ("lora-suffix-not-a-number", {"lora": "brand.safetensors:x"}, {"lora"}),
    ("lora-colon-path-missing", {"lora": "a:b.safetensors:0.5"}, {"lora"}),
    (
        "all-at-once",
        {"size": "65x64", "steps": 0, "delimiter": ";;", "name": "n" * 300},
        {"size", "steps", "delimiter", "name"},
    ),
]


def cli_args(values: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in values.items():
        flag = option(name).flag
        if name == "columns":
            args += [a for k, v in value.items() for a in (flag, f"{k}={v or ''}")]
        elif isinstance(value, bool):
            args += [flag] if value is not option(name).default else []
        else:
            args += [flag, str(value)]
    return args


def v1_message(rid: str, values: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"v": 1, "request_id": rid, "rows": ROWS, "options": {}}
    for name, value in values.items():
        (message if option(name).spec.v1 == "top" else message["options"])[name] = value
    return message


def normalised(lines: list[str]) -> list[str]:
    """Problem lines less the door's prefix (`request: field 'x': ` or `--x: `) and the rows' location."""
    out = []
    for line in lines:
        for d in declared():
            line = line.removeprefix(f"request: field {d.name!r}: ").removeprefix(f"{d.flag}: ")
        out.append(line.split(":", 1)[1].strip() if line.startswith(("<rows>:", "/")) else line)
    return out


def fields_of(lines: list[str]) -> set[str]:
    found = {d.name for d in declared() for line in lines if line.startswith(f"request: field {d.name!r}: ")}
    return found | ({"rows"} if any(line.startswith("<rows>:") for line in lines) else set())


def write_lora(path: Path) -> Path:
    """The smallest file the submit check takes for a LoRA: a safetensors header naming one `lora` tensor."""
    header = json.dumps({"unet.x.lora_A.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    return path


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    loras = tmp_path_factory.mktemp("loras")
    write_lora(loras / "brand.safetensors")
    env = Env(tmp_path_factory.mktemp("options") / "data", tiny_model, backend={"PIXELMILL_LORA_DIR": str(loras)})
    env.data_dir.mkdir()
    yield env
    env.close()


def cli_submit(env: Env, monkeypatch: pytest.MonkeyPatch, csv: Path, args: list[str]) -> Result:
    """`pixelmill submit CSV ARGS` in this process, with the installation's settings and no others."""
    for key in [k for k in os.environ if k.startswith("PIXELMILL_")]:
        monkeypatch.delenv(key)
    for key, value in env.vars.items():
        if key.startswith(("PIXELMILL_", "OMP_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["submit", str(csv), *args])
    finally:
        get_settings.cache_clear()


def through_cli(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, values: dict[str, Any]) -> list[str]:
    path = tmp_path / "c.csv"
    path.write_text("id,title\nA-1,mug\nA-2,cup\n")
    result = cli_submit(env, monkeypatch, path, cli_args({**GOOD, **values}))
    assert result.exit_code == 2, result.output
    text = result.output.replace("error: ", "", 1).strip()
    first, _, rest = text.partition("\n")
    lines = rest.splitlines() if first.endswith("problems; nothing was submitted:") else [first]
    return [line.removesuffix("; nothing was submitted") for line in lines]


def through_request(env: Env, values: dict[str, Any]) -> list[str]:
    with pytest.raises(RequestProblems) as refused:
        make_request(env.settings(), Options(**{**GOOD, **values}), rows=ROWS, tenant_id=DEFAULT_TENANT_ID)
    return refused.value.problems


def through_client(env: Env, values: dict[str, Any]) -> list[str]:
    with Client(env.settings()) as client, pytest.raises(SubmitError) as refused:
        client.submit(rows=ROWS, **{**GOOD, **values})
    return refused.value.problems


def through_intake(env: Env, rid: str, values: dict[str, Any]) -> list[str]:
    ledger = env.ledger()
    try:
        result = intake(env.settings(), ledger, v1_message(rid, {**GOOD, **values}), tenant=DEFAULT_TENANT)
    finally:
        ledger.close()
    assert result.status == "rejected"
    return result.problems


def through_http(env: Env, rid: str, values: dict[str, Any]) -> list[str]:
    with TestClient(create_app(env.settings(), dispatch=False), base_url=LOOPBACK) as http:
        answer = http.post("/v1/jobs", json=v1_message(rid, {**GOOD, **values}))
    assert answer.status_code == 422, answer.text
    return answer.json()["problems"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("values", "names"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_the_same_bad_options_get_the_same_problems_from_every_door(
    installation: Env,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    values: dict[str, Any],
    names: set[str],
) -> None:
    env = installation
    rid = request.node.callspec.id
    reference = through_request(env, values)
    assert fields_of(reference) == names, reference
    expected = normalised(reference)
    assert normalised(through_client(env, values)) == expected
    assert normalised(through_intake(env, f"intake-{rid}", values)) == expected
    assert normalised(through_http(env, f"http-{rid}", values)) == expected
    assert normalised(through_cli(env, monkeypatch, tmp_path, values)) == expected


def test_the_table_has_at_least_20_bad_option_sets() -> None:
    assert len(BAD) >= 20 and len({b[0] for b in BAD}) == len(BAD)


def test_a_300_character_name_is_refused_by_every_door(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {"name": "n" * 300}
    line = "must be 1 to 200 characters, not blank, got 300"
    assert through_request(installation, values) == [f"request: field 'name': {line}"]
    assert through_client(installation, values) == [f"request: field 'name': {line}"]
    assert through_intake(installation, "long-name-intake", values) == [f"request: field 'name': {line}"]
    assert through_http(installation, "long-name-http", values) == [f"request: field 'name': {line}"]
    assert through_cli(installation, monkeypatch, tmp_path, values) == [f"--name: {line}"]


def test_a_bad_size_does_not_hide_a_wrong_key(installation: Env) -> None:
    """Every problem at once, in every door that takes rows: the options' and the rows' (read with stand-ins)."""
    values = {"size": "3x3", "key": "sku"}
    expected = through_request(installation, values)
    assert expected[0].startswith("request: field 'size': ") and expected[1].startswith(
        "<rows>:1: field 'sku': is missing: no such field in the first object for the item key (--key sku)"
    )
    assert through_client(installation, values) == expected
    assert through_intake(installation, "size-and-key-intake", values) == expected
    assert through_http(installation, "size-and-key-http", values) == expected


def test_the_demo_checks_its_options_as_submit_does() -> None:
    result = CliRunner().invoke(app, ["demo", "--steps", "201"])
    assert result.exit_code == 2 and "must be a whole number from 1 to 200, got 201" in result.output


def test_v1_reader_options_reach_the_request(installation: Env) -> None:
    """delimiter, encoding, columns and row_overrides: in a v1 request as in the CLI."""
    from producer.request_v1 import validate_v1

    message = v1_message(
        "reader", {**GOOD, "delimiter": ";", "encoding": "latin-1", "columns": {"size": None}, "row_overrides": False}
    )
    options = validate_v1(installation.settings(), message, DEFAULT_TENANT).options
    assert (options.delimiter, options.encoding, options.row_overrides) == (";", "latin-1", False)
    request = make_request(installation.settings(), options, rows=ROWS, tenant_id=DEFAULT_TENANT_ID)
    assert request.defaults.override_columns()["size"] is None and request.defaults.delimiter == ";"


def test_the_rows_beside_a_bad_option_are_read_as_asked(installation: Env, tmp_path: Path) -> None:
    """A bad size with --delimiter ';': the rows are read with ';' (no made-up key problem), a bad one reported."""
    path = tmp_path / "c.csv"
    path.write_text("id;title\nA-1;mug\n;cup\n")
    with pytest.raises(RequestProblems) as refused:
        make_request(
            installation.settings(),
            Options(**GOOD, size="3x3", delimiter=";"),
            source=path,
            tenant_id=DEFAULT_TENANT_ID,
        )
    assert [p.split(": ", 1)[0] for p in refused.value.problems] == ["request", f"{path}:3"]


# --- the LoRA shorthand, PATH[:SCALE] -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("brand.safetensors", ("brand.safetensors", None)),
        ("brand.safetensors:0.8", ("brand.safetensors", 0.8)),
        ("brand.safetensors:1", ("brand.safetensors", 1.0)),
        ("brand.safetensors:.5", ("brand.safetensors", 0.5)),
        ("brand.safetensors:3", ("brand.safetensors", 3.0)),  # a scale, out of range: refused, not read as a path
        ("brand.safetensors:-1", ("brand.safetensors", -1.0)),
        ("a:b.safetensors", ("a:b.safetensors", None)),  # a ':' inside the path
        ("a:b.safetensors:2", ("a:b.safetensors", 2.0)),  # split at the last ':' only
        ("brand.safetensors:1e-1", ("brand.safetensors:1e-1", None)),  # no exponents: all path
        ("brand.safetensors:nan", ("brand.safetensors:nan", None)),
        ("s3://bucket/brand.safetensors", ("s3://bucket/brand.safetensors", None)),
        (":0.5", (":0.5", None)),  # no path before it: not a scale
    ],
)
def test_the_lora_shorthand_splits_a_trailing_number_off_as_the_scale(
    value: str, expected: tuple[str, float | None]
) -> None:
    from producer.options import split_lora

    assert split_lora(value) == expected


def test_the_lora_shorthand_is_the_same_request_as_the_two_options(installation: Env) -> None:
    settings = installation.settings()
    path = str(installation.settings().lora_dir / "brand.safetensors")  # type: ignore[operator]

    def made(**values: Any) -> Any:
        return make_request(settings, Options(**GOOD, **values), rows=ROWS, tenant_id=DEFAULT_TENANT_ID)

    short = made(lora="brand.safetensors:0.5")
    assert short.lora is not None and (short.lora.path, short.lora.scale) == (path, 0.5)
    long = made(lora="brand.safetensors", lora_scale=0.5)
    assert long.lora == short.lora and long.digest == short.digest  # one request, whichever spelling
    assert made(lora="brand.safetensors:0.5", lora_scale=0.5).lora == short.lora  # agreeing: fine
    assert made(lora="brand.safetensors:0").lora.scale == 0.0
    plain = made(lora="brand.safetensors")
    assert plain.lora is not None and plain.lora.scale == 1.0 and plain.digest != short.digest


def test_the_lora_shorthand_reaches_the_items_through_every_door(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`lora: brand.safetensors:0.5` from the CLI, `Client.submit`, the intake queue and HTTP: the items carry the
    resolved file and the scale 0.5."""
    from sqlalchemy import select

    from contract.schema import Item

    env = installation
    values = {**GOOD, "lora": "brand.safetensors:0.5"}

    def rows(door: str) -> list[dict[str, Any]]:  # rows of their own: a repeat of another door's would be skipped
        return [{"id": f"{door}-{i}", "title": "mug"} for i in (1, 2)]

    def message(door: str) -> dict[str, Any]:
        return {**v1_message(f"lora-short-{door}", values), "rows": rows(door)}

    jobs: dict[str, int] = {}
    with Client(env.settings()) as client:
        jobs["client"] = client.submit(rows=rows("client"), **values).id
    ledger = env.ledger()
    try:
        result = intake(env.settings(), ledger, message("intake"), tenant=DEFAULT_TENANT)
    finally:
        ledger.close()
    assert result.status == "accepted" and result.job is not None, result.problems
    jobs["intake"] = result.job
    with TestClient(create_app(env.settings(), dispatch=False), base_url=LOOPBACK) as http:
        answer = http.post("/v1/jobs", json=message("http"))
    assert answer.status_code in (200, 201, 202), answer.text
    jobs["http"] = answer.json()["job"]
    path = tmp_path / "c.csv"
    path.write_text("id,title\ncli-1,mug\ncli-2,cup\n")
    cli = cli_submit(env, monkeypatch, path, [*cli_args(values), "--json"])
    assert cli.exit_code == 0, cli.output
    jobs["cli"] = json.loads(cli.stdout)["job"]
    expected = str(env.settings().lora_dir / "brand.safetensors")  # type: ignore[operator]
    ledger = env.ledger()
    try:
        with ledger.session() as session:
            for door, job in jobs.items():
                params = session.scalars(select(Item.params).where(Item.job_id == job)).all()
                assert len(params) == 2, door
                assert {(p["lora"], p["lora_scale"]) for p in params} == {(expected, 0.5)}, door
    finally:
        ledger.close()
