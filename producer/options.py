"""Every submit option, declared once: name, type and default (the `Options` field), bounds, help text, CLI
flag and place in the v1 request (its `Spec`, the field's metadata).

The doors derive from this declaration: the CLI `submit` takes its defaults and help from it, the v1 JSON
Schema (contract/schemas/request-v1.json, also the HTTP body) is generated from it (`v1_schema`; a test keeps
the committed file equal), `Client.submit`'s keyword arguments are typed by `OptionArgs` (a test keeps it
equal to `Options`), and `option_problems` checks every option against it, collecting every problem
(producer/request.py `make_request`, the one function every door calls). Imports nothing heavy: the CLI
reads it at start-up.

Regenerate the schema after changing an option: `python -m producer.options > contract/schemas/request-v1.json`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict

from contract.fairshare import DEFAULT_PRIORITY, PRIORITIES
from contract.params import LORA_SCALE_MAX, MODES, STRENGTH_DEFAULT

SEED_MAX = 2**63 - 1  # producer.catalogue.SEED_MAX: a signed BIGINT (test_options checks they agree)
NAME_MAX = 200  # jobs.name, catalogues.name, jobs.request_id: VARCHAR(200)
OVERRIDE_NAMES = (  # catalogue.OVERRIDES
    "prompt",
    "negative",
    "size",
    "steps",
    "guidance",
    "images_per_item",
    "seed",
    "mode",
    "strength",
    "image",
    "mask",
)


@dataclass(frozen=True)
class Spec:
    """What the dataclass field of an option cannot say."""

    help: str
    v1: Literal["top", "options"] = "top"  # where the v1 request carries it: the message, or its `options`
    flag: str = ""  # the CLI spelling; "" for --name-with-dashes
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None  # strings: at least this long and not blank
    max_length: int | None = None
    pattern: str | None = None  # the v1 schema's pattern (the value is checked by `option_problems` anyway)
    values_max_length: int | None = None  # mappings: the longest value
    v1_help: str = ""  # the v1 schema's description where `help` speaks of CLI flags
    choices: tuple[str, ...] = ()  # strings: one of these (the v1 schema's enum)


def _option(default: Any, help: str, **spec: Any) -> Any:  # noqa: A002 (the declaration's word)
    return field(default=default, metadata={"spec": Spec(help, **spec)})


@dataclass(frozen=True)
class Options:
    """What a submission can ask for: one field per submit option, the same in every door."""

    template: str | None = _option(
        None,
        "Prompt template, e.g. 'studio photo of {title}'. Without it, rows need a `prompt` column.",
        min_length=1,
        max_length=4000,
    )
    negative: str = _option("", "Negative prompt.", v1="options", max_length=4000)
    size: str = _option(
        "512x512", "WIDTHxHEIGHT, multiples of 8 from 64 to 2048.", v1="options", pattern="^[0-9]{1,5}x[0-9]{1,5}$"
    )
    steps: int = _option(30, "Denoising steps.", v1="options", minimum=1, maximum=200)
    guidance: float = _option(7.5, "Classifier-free guidance scale.", v1="options", minimum=0, maximum=50)
    images_per_item: int = _option(1, "Variants per row.", v1="options", minimum=1, maximum=16)
    seed: int = _option(
        0, "Job seed; item seeds derive from it, the key and the variant.", v1="options", minimum=0, maximum=SEED_MAX
    )
    model: str | None = _option(
        None, "Diffusers model directory or id (default: PIXELMILL_MODEL, else the tiny model).", max_length=1000
    )
    key: str = _option("id", "Column holding the item key.", min_length=1, max_length=NAME_MAX)
    delimiter: str = _option(",", "CSV delimiter: ',' ';' '|' or tab ('\\t' or 'tab').", max_length=10)
    encoding: str = _option(
        "utf-8", "CSV encoding: utf-8, utf-8-sig, cp1252, latin-1, or utf-16 (Excel's Unicode text).", max_length=40
    )
    columns: Mapping[str, str | None] | None = _option(
        None,
        "Read the per-row override NAME (prompt, negative, size, steps, guidance, images_per_item, seed, mode, "
        "strength, image, mask) from COLUMN; NAME= switches it off. Repeatable.",
        flag="--column",
        values_max_length=NAME_MAX,
        v1_help="Per-row override name -> the column it is read from (null: not read), e.g. "
        '{"size": "render_size", "seed": null}.',
    )
    row_overrides: bool = _option(
        True,
        "No column overrides the job's options (except --column ones).",
        flag="--no-row-overrides",
        v1_help="false: no column overrides the job's options (except those named in `columns`).",
    )
    name: str | None = _option(None, "Job name.", min_length=1, max_length=NAME_MAX)
    catalogue: str | None = _option(
        None,
        "Make this job a run of the named catalogue: entries record new, changed, unchanged and retired keys.",
        min_length=1,
        max_length=NAME_MAX,
    )
    request_id: str | None = _option(
        None,
        "Idempotency key: submitting again with it returns the first job and writes nothing.",
        v1_help="Idempotency key: the same request_id always means the same job; a repeat gets that job's events "
        "again and writes nothing.",
        min_length=1,
        max_length=NAME_MAX,
        pattern="\\S",
    )
    max_retire: float | None = _option(
        None,
        "With --catalogue: refuse a run that would retire more than this percent of the current entries "
        "(default: PIXELMILL_CATALOGUE_MAX_RETIRE, 10; up to PIXELMILL_CATALOGUE_RETIRE_FLOOR entries always may).",
        minimum=0,
        maximum=100,
        v1_help="With `catalogue`: refuse the run (nothing written) if it would retire more than this percent of "
        "the catalogue's current entries; default PIXELMILL_CATALOGUE_MAX_RETIRE (10). Retiring up to "
        "PIXELMILL_CATALOGUE_RETIRE_FLOOR entries is always allowed.",
    )
    allow_retire: bool = _option(
        False,
        "With --catalogue: retire every absent key, however many (no guard).",
        v1_help="With `catalogue`: retire every key absent from this run, however many (no retire guard).",
    )
    gate: str | None = _option(
        None,
        "Quality gate, e.g. 'clip_score>=28,sharpness>=50' (default: PIXELMILL_GATE).",
        v1="options",
        max_length=1000,
    )
    gate_attempts: int | None = _option(
        None, "Re-roll below the gate with the next seed: N candidates at most.", v1="options", minimum=1, maximum=16
    )
    best_of: int | None = _option(
        None, "Make N candidates per item and keep the best.", v1="options", minimum=1, maximum=16
    )
    mode: str = _option(
        "text",
        "text, background or restyle: background keeps each row's photo (its `image` column) pixel for pixel and "
        "generates what surrounds it; restyle redraws the photo (img2img). A `mode` column overrides it per row.",
        v1="options",
        choices=MODES,
    )
    strength: float = _option(
        STRENGTH_DEFAULT,
        "restyle: how far the image may move from the photo (0.05 to 1); a `strength` column overrides it.",
        v1="options",
        minimum=0.05,
        maximum=1,
    )
    lora: str | None = _option(
        None,
        "Brand LoRA, PATH[:SCALE]: a .safetensors file under PIXELMILL_LORA_DIR or the tenant's input root (a "
        "relative path is looked up there); every item of the job is made with it. A trailing :SCALE (a number "
        f"from 0 to {LORA_SCALE_MAX:g}, e.g. brand.safetensors:0.8) is its weight, as --lora-scale.",
        v1="options",
        min_length=1,
        max_length=1000,
        v1_help="Brand LoRA, PATH[:SCALE]: a .safetensors file under PIXELMILL_LORA_DIR or one of the tenant's "
        "source roots, never a URL; every item of the job is made with it. A trailing :SCALE (a number from 0 to "
        f"{LORA_SCALE_MAX:g}, e.g. brand.safetensors:0.8) is its weight, as `lora_scale`.",
    )
    lora_scale: float = _option(
        1.0,
        f"With --lora: its weight, 0 (the base model, exactly) to {LORA_SCALE_MAX:g}; or give it as --lora PATH:SCALE.",
        v1="options",
        minimum=0,
        maximum=LORA_SCALE_MAX,
        v1_help=f"With `lora`: its weight, 0 (the base model, exactly) to {LORA_SCALE_MAX:g}; or give it as "
        "`lora` PATH:SCALE.",
    )
    priority: str = _option(
        DEFAULT_PRIORITY,
        "interactive, normal or bulk: within its tenant, the scheduler sends a higher priority's items first.",
        choices=PRIORITIES,
        v1_help="interactive, normal or bulk: within the tenant's share of the GPUs, the scheduler sends a "
        "higher priority's items first.",
    )


class OptionArgs(TypedDict, total=False):
    """`Options` as keyword arguments (`Client.submit(**options)`), so type checkers and editors see each option's
    type; test_options checks that it names every field of `Options` with the same type."""

    template: str | None
    negative: str
    size: str
    steps: int
    guidance: float
    images_per_item: int
    seed: int
    model: str | None
    key: str
    delimiter: str
    encoding: str
    columns: Mapping[str, str | None] | None
    row_overrides: bool
    name: str | None
    catalogue: str | None
    request_id: str | None
    max_retire: float | None
    allow_retire: bool
    gate: str | None
    gate_attempts: int | None
    best_of: int | None
    mode: str
    strength: float
    lora: str | None
    lora_scale: float
    priority: str


@dataclass(frozen=True)
class Declared:
    """One option as declared: its field's name, type and default with its `Spec`."""

    name: str
    type: Any
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The type without None: str, int, float, bool or a Mapping."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        found = args[0] if self.nullable else self.type
        return typing.get_origin(found) or found


@functools.cache
def declared() -> tuple[Declared, ...]:
    hints = typing.get_type_hints(Options)
    return tuple(Declared(f.name, hints[f.name], f.default, f.metadata["spec"]) for f in fields(Options))


def option(name: str) -> Declared:
    return next(d for d in declared() if d.name == name)


HELP = {f.name: f.metadata["spec"].help for f in fields(Options)}  # the CLI's help texts
DEFAULTS = Options()


# --- checks -------------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    return f"{value!r:.60}"


def _number_problem(d: Declared, value: Any) -> str | None:
    whole = d.base is int
    lo, hi = d.spec.minimum, d.spec.maximum
    kind = "a whole number" if whole else "a number"
    ok = (
        (type(value) is int if whole else isinstance(value, int | float) and not isinstance(value, bool))
        and (whole or math.isfinite(value))
        and (lo is None or value >= lo)
        and (hi is None or value <= hi)
    )
    return None if ok else f"must be {kind} from {lo:g} to {hi:g}, got {_shown(value)}"


def _text_problem(d: Declared, value: Any) -> str | None:
    from producer.catalogue import surrogate_problem

    if not isinstance(value, str):
        return f"must be text, got {_shown(value)}"
    lo, hi = d.spec.min_length, d.spec.max_length
    if d.spec.choices and value not in d.spec.choices:
        return f"must be one of {', '.join(d.spec.choices)}, got {_shown(value)}"
    if (lo and not value.strip()) or (hi is not None and len(value) > hi):
        return f"must be {lo or 0} to {hi} characters{', not blank' if lo else ''}, got {len(value)}"
    if "\x00" in value:
        return "contains a NUL byte, which PostgreSQL cannot store; remove it"
    return surrogate_problem(value)


def _mapping_problem(d: Declared, value: Any) -> str | None:
    from producer.catalogue import surrogate_problem

    if not isinstance(value, Mapping):
        return f"must map override names to column names, got {_shown(value)}"
    for name, column in value.items():
        if not isinstance(name, str) or not (column is None or isinstance(column, str)):
            return f"must map override names to column names (or None), got {name!r:.40}: {column!r:.40}"
        if column is not None and len(column) > (d.spec.values_max_length or 0):
            return f"--column {name:.40}=...: the column must be at most {d.spec.values_max_length} characters"
        for text in (name, column):  # echoed into rejections and stored in the ledger's events: must be storable
            if text is not None and "\x00" in text:
                return f"--column {name!r:.40}: contains a NUL byte, which PostgreSQL cannot store; remove it"
            if text is not None and (problem := surrogate_problem(text)) is not None:
                return f"--column {name!r:.40}: {problem}"
    return None


def value_problem(d: Declared, value: Any) -> str | None:
    """What is wrong with `value` for this option by its declaration (type and bounds), or None."""
    if value is None and d.nullable:
        return None
    if d.base is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {_shown(value)}"
    if d.base in (int, float):
        return _number_problem(d, value)
    if d.base is str:
        return _text_problem(d, value)
    return _mapping_problem(d, value)


def _rule_problems(options: Options, bad: set[str]) -> Iterator[tuple[str, str]]:
    """The rules beyond type and bounds, each on options whose declared checks passed."""
    from contract.params import parse_size
    from producer.catalogue import UsageError, check_columns, parse_delimiter, parse_encoding, template_fields
    from producer.catalogue_runs import check_name

    rules: list[tuple[str, Any]] = [
        ("size", lambda: parse_size(options.size)),
        ("template", lambda: options.template is None or template_fields(options.template)),
        ("delimiter", lambda: parse_delimiter(options.delimiter)),
        ("encoding", lambda: parse_encoding(options.encoding)),
        ("catalogue", lambda: options.catalogue is None or check_name(options.catalogue)),
    ]
    if not bad & {"columns", "template"}:
        rules.append(("columns", lambda: check_columns(options.columns or {}, options.template)))
    for name, rule in rules:
        if name not in bad:
            try:
                rule()
            except (UsageError, ValueError) as exc:
                yield name, str(exc)
    if options.catalogue is None:
        for name in ("max_retire", "allow_retire"):
            if name not in bad and getattr(options, name) not in (None, False):
                yield name, "applies to catalogue runs only (give catalogue, --catalogue on the command line)"
    if options.lora is None and "lora_scale" not in bad and options.lora_scale != DEFAULTS.lora_scale:
        yield "lora_scale", "applies with a LoRA only (give lora, --lora on the command line)"
    yield from _lora_shorthand_problems(options, bad)


# --- the LoRA shorthand, PATH[:SCALE] -------------------------------------------------------------------------

# A trailing ':' and a plain decimal number (sign allowed, no exponent). A path may hold ':' itself: whatever else
# follows the last ':' is part of the path, and a LoRA's path ends in .safetensors, so it never ends like this.
_SCALE_SUFFIX = re.compile(r":(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))$")


def split_lora(value: str) -> tuple[str, float | None]:
    """`lora` as PATH and SCALE: `brand.safetensors:0.8` -> ("brand.safetensors", 0.8); a value without a numeric
    suffix after its last ':' (`brand.safetensors`, `s3://b/brand.safetensors`, `a:b.safetensors`) is all path,
    (value, None). The scale is not range-checked here (`option_problems` does)."""
    found = _SCALE_SUFFIX.search(value)
    if found is None or not value[: found.start()].strip():
        return value, None
    return value[: found.start()], float(found.group(1))


def lora_choice(options: Options) -> tuple[str | None, float]:
    """The job's LoRA path and scale: the shorthand's scale when `lora` has one, else `lora_scale`."""
    if options.lora is None:
        return None, options.lora_scale
    path, scale = split_lora(options.lora)
    return path, options.lora_scale if scale is None else scale


def _lora_shorthand_problems(options: Options, bad: set[str]) -> Iterator[tuple[str, str]]:
    """A `:SCALE` suffix out of range (a problem of `lora`), or one that `lora_scale` contradicts (a problem of
    `lora_scale`; at its default, 1, `lora_scale` counts as not given, so `--lora a.safetensors:0.5` alone is 0.5)."""
    if options.lora is None or "lora" in bad:
        return
    _, scale = split_lora(options.lora)
    if scale is None:
        return
    if not 0 <= scale <= LORA_SCALE_MAX:
        yield "lora", f"its scale (after the last ':') must be a number from 0 to {LORA_SCALE_MAX:g}, got {scale:g}"
    elif "lora_scale" not in bad and options.lora_scale not in (DEFAULTS.lora_scale, scale):
        yield (
            "lora_scale",
            f"is {options.lora_scale:g} but lora gives the scale {scale:g} after its ':'; give the scale once",
        )


def option_problems(options: Options) -> list[tuple[str, str]]:
    """(option name, message) for every problem in `options`, in declaration order. The checks that need the
    settings (the gate) and the rows are `make_request`'s."""
    problems = [(d.name, p) for d in declared() if (p := value_problem(d, getattr(options, d.name))) is not None]
    problems += _rule_problems(options, {name for name, _ in problems})
    order = {d.name: i for i, d in enumerate(declared())}
    return sorted(problems, key=lambda p: order[p[0]])


# --- the v1 request -----------------------------------------------------------------------------------------

_V1_HEAD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://pixelmill.dev/schemas/request-v1.json",
    "title": "pixelmill request v1",
    "description": "One image-generation request: the single argument of the Celery task `pixelmill.submit` on "
    "the queue `pixelmill.intake`, and the body of `POST /v1/jobs`. Exactly one of `rows` and `source`. Values "
    "are checked again by the same validators as `pixelmill submit` (sizes multiples of 8 from 64 to 2048, the "
    "catalogue's rules per row); every problem is reported in a `job.rejected` event (or a 422). Generated from "
    "producer/options.py.",
    "type": "object",
    "additionalProperties": False,
    "required": ["v", "request_id"],
    "oneOf": [{"required": ["rows"]}, {"required": ["source"]}],
}
_V1_DOOR: dict[str, Any] = {  # what only the v1 door has: the version, the catalogue's place, where events go
    "v": {"const": 1, "description": "Message version."},
    "rows": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "integer", "boolean", "null"]},
        },
        "description": "Inline catalogue rows (objects, as JSONL lines would be), at most PIXELMILL_INTAKE_MAX_ROWS "
        "(default 10000); larger catalogues go by `source`.",
    },
    "source": {
        "type": "string",
        "minLength": 1,
        "maxLength": 2000,
        "description": "A catalogue the intake can read: s3://bucket/key.csv|.jsonl[.gz] (the configured S3 "
        "settings) or a path on the intake host.",
    },
}
_V1_TAIL: dict[str, Any] = {
    "reply_to": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 200,
        "pattern": "^[A-Za-z0-9_.:-]+$",
        "description": "A queue: every event is sent there as the Celery task `pixelmill.event` with the event as "
        "its one argument.",
    },
    "webhook": {
        "type": ["string", "null"],
        "maxLength": 1000,
        "description": "An https URL (plain http only to loopback, or with PIXELMILL_WEBHOOK_ALLOW_HTTP) that "
        "receives every event as a signed POST (Standard Webhooks).",
    },
    "events": {
        "type": "array",
        "uniqueItems": True,
        "items": {
            "enum": ["job.accepted", "job.rejected", "job.finished", "item.succeeded", "item.failed", "item.blocked"]
        },
        "description": "Event types wanted; job-level events are always sent, item events only when listed.",
    },
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def property_schema(d: Declared) -> dict[str, Any]:
    """The JSON Schema of one option, from its declaration."""
    spec = d.spec
    if d.base in _JSON_TYPES:
        kind: Any = _JSON_TYPES[d.base]
        schema: dict[str, Any] = {"type": [kind, "null"] if d.nullable else kind}
    else:
        schema = {
            "type": ["object", "null"] if d.nullable else "object",
            "propertyNames": {"enum": list(OVERRIDE_NAMES)},
            "additionalProperties": {"type": ["string", "null"], "maxLength": spec.values_max_length},
        }
    for key, value in (
        ("minimum", spec.minimum),
        ("maximum", spec.maximum),
        ("minLength", spec.min_length),
        ("maxLength", spec.max_length),
        ("pattern", spec.pattern),
    ):
        if value is not None:
            schema[key] = int(value) if isinstance(value, float) and value.is_integer() else value
    if spec.choices:
        schema["enum"] = list(spec.choices)
    if d.default is not None:
        schema["default"] = dict(d.default) if isinstance(d.default, Mapping) else d.default
    schema["description"] = spec.v1_help or spec.help
    return schema


def v1_schema() -> dict[str, Any]:
    """contract/schemas/request-v1.json, as this declaration makes it."""
    top = {d.name: property_schema(d) for d in declared() if d.spec.v1 == "top"}
    nested = {d.name: property_schema(d) for d in declared() if d.spec.v1 == "options"}
    request_id = top.pop("request_id")
    request_id["type"] = "string"  # required in a v1 request: the idempotency key of every message
    options = {"type": "object", "additionalProperties": False, "properties": nested}
    properties = {**_V1_DOOR, "request_id": request_id, **top, "options": options, **_V1_TAIL}
    return {**_V1_HEAD, "properties": {"v": properties.pop("v"), **properties}}


def v1_field_names() -> tuple[set[str], set[str]]:
    """The option names of a v1 request: at its top level, and in its `options`."""
    return {d.name for d in declared() if d.spec.v1 == "top"}, {d.name for d in declared() if d.spec.v1 == "options"}


def from_v1(message: Mapping[str, Any]) -> Options:
    """The options of a v1 request (shape-checked by the schema, values not yet: `option_problems` does)."""
    nested = message.get("options")
    nested = nested if isinstance(nested, Mapping) else {}
    values = {d.name: (message if d.spec.v1 == "top" else nested).get(d.name, d.default) for d in declared()}
    request_id = message.get("request_id")
    if not values["name"] and value_problem(option("request_id"), request_id) is None:
        values["name"] = request_id  # a v1 job is named after its request unless named (a bad id: reported once)
    return Options(**values)


def blocklists(settings: Any) -> tuple[str, ...]:
    """PIXELMILL_PROMPT_BLOCKLISTS as the prompt filter's sources (empty: no prompt filter)."""
    return tuple(s.strip() for s in settings.prompt_blocklists.split(",") if s.strip())


def schema_text() -> str:
    return json.dumps(v1_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
