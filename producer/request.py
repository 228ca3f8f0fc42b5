"""Options → `SubmitRequest`: the one function every door (CLI, Python API `pixelmill.api`, the intake queue, HTTP)
builds its request with, and the request itself.

`make_request` checks every option (`producer.options`), resolves the model and the job's checks, and raises
RequestProblems listing every problem at once, each in the CLI's `where: field 'x': message` form (or as the
option's flag); the request is then submitted with `producer.submit.submit_request`, or previewed with
`producer.planning.preview_request`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from contract import logs
from contract.checks import Checks, ChecksError, resolve_checks
from contract.events import Notify
from contract.identity import resolve_model
from contract.params import MODES, STRENGTH_DEFAULT, parse_size
from contract.settings import ENV_PREFIX, Settings
from producer import catalogue_runs
from producer.catalogue import (
    ENV,
    CatalogueError,
    Defaults,
    Limits,
    UsageError,
    check_seed,
    iter_catalogue,
    iter_rows,
    surrogate_problem,
)
from producer.lora import CheckedLora, LoraProblem, check_lora
from producer.options import Options as Options  # re-exported: the doors import it from here
from producer.options import blocklists, lora_choice, option, option_problems, value_problem

REQUEST_ID_MAX = 200


def _canonical(value: object) -> bytes:
    """One line of canonical JSON (keys sorted, no spaces): equal values, equal bytes, whatever their order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text.encode("utf-8", "surrogatepass") + b"\n"


@dataclass(frozen=True)
class RequestDigest:
    """What makes two requests with one `request_id` the same request (finding 3 of issue 22): the SHA-256 of
    the options as the caller gave them (less the `request_id`), the source as the caller named it (a path or
    URL: a file's contents are not read twice), the destinations of its events, and every inline row. A repeat
    with the same digest gets the first job; a different one is refused (`producer.submit.RequestIdReused`), so
    a second caller can neither take over nor silently drop a request. Rows may be a one-pass iterable: the
    submission digests them as it reads them (`running` + `digesting`)."""

    header: bytes

    @classmethod
    def of(cls, options: Options, *, source: str | None, notify: Notify | None) -> RequestDigest:
        asked = {k: v for k, v in asdict(options).items() if k != "request_id"}
        if asked.get("priority") == "normal":  # added by migration 0013: the digests stored before still match
            del asked["priority"]
        if asked.get("mode") == "text" and asked.get("strength") == STRENGTH_DEFAULT:  # added by 0015: likewise
            del asked["mode"], asked["strength"]
        if asked.get("lora") is None and asked.get("lora_scale") == 1.0:  # added with brand LoRAs: likewise
            del asked["lora"], asked["lora_scale"]
        return cls(_canonical({"options": asked, "source": source, "notify": notify.as_json() if notify else None}))

    def running(self) -> hashlib._Hash:
        return hashlib.sha256(self.header)

    def of_rows(self, rows: Iterable[Mapping[str, object]] | None) -> str:
        """The whole digest (reads `rows` through)."""
        hasher = self.running()
        for _ in digesting(rows or (), hasher):
            pass
        return hasher.hexdigest()


def digesting(rows: Iterable[Mapping[str, object]], hasher: hashlib._Hash) -> Iterator[Mapping[str, object]]:
    """`rows`, each added to `hasher` as it is read."""
    for row in rows:
        hasher.update(_canonical(dict(row) if isinstance(row, Mapping) else row))
        yield row


@dataclass(frozen=True)
class SubmitRequest:
    """Everything one submission needs, whichever door it came through. Exactly one of `source` (a path, a
    `.gz` path or "-" for stdin) and `rows` (mappings, as the Python API gives them). `model` is resolved
    (`identity.resolve_model`). `request_id` is the idempotency key: a second request with it returns the
    first job and writes nothing."""

    defaults: Defaults
    model: str
    tenant_id: int  # the owner (contract/tenants.py): the door's caller; no default, so no door can forget it
    source: Path | str | None = None
    rows: Iterable[Mapping[str, object]] | None = None
    seed: int = 0
    name: str | None = None
    catalogue: str | None = None
    request_id: str | None = None  # unique per tenant
    digest: RequestDigest | None = field(default=None, repr=False)  # what a repeat of `request_id` must match
    checks: Checks | None = None
    blocklists: tuple[str, ...] = ()  # prompt filter sources; empty: no prompt filter
    limits: Limits | None = None  # default: `limits_for(settings)`
    notify: Notify | None = None  # where the job's events go (the intake queue and HTTP doors); None: nowhere
    # The retire guard of a catalogue run (`catalogue_runs.RetireGuard`): percent of the current entries a run may
    # retire (None: PIXELMILL_CATALOGUE_MAX_RETIRE), or no limit for this run (`allow_retire`).
    max_retire: float | None = None
    allow_retire: bool = False
    priority: str = "normal"  # interactive | normal | bulk (contract/fairshare.py): the order within the tenant
    lora: CheckedLora | None = None  # a brand LoRA as checked (producer/lora.py)

    def __post_init__(self) -> None:
        if (self.source is None) == (self.rows is None):
            raise UsageError("give exactly one of source (a file or '-') and rows")
        if self.max_retire is not None and not (
            isinstance(self.max_retire, int | float)
            and not isinstance(self.max_retire, bool)
            and 0 <= self.max_retire <= 100
        ):
            raise UsageError(f"max_retire must be a percent from 0 to 100, got {self.max_retire!r:.40}")
        try:
            check_seed(self.seed)
            if self.catalogue is not None:
                catalogue_runs.check_name(self.catalogue)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if self.request_id is not None and (not self.request_id.strip() or len(self.request_id) > REQUEST_ID_MAX):
            raise UsageError(f"request_id must be 1 to {REQUEST_ID_MAX} characters, got {self.request_id!r:.80}")
        for field_name, text in (
            ("name", self.name),
            ("catalogue", self.catalogue),
            ("request_id", self.request_id),
            ("model", self.model),
        ):
            if (problem := surrogate_problem(text)) is not None:  # stored as text: must be encodable
                raise UsageError(f"{field_name}: {problem}")

    @property
    def source_name(self) -> str:
        if self.source is None:
            return "<rows>"
        return "-" if str(self.source) == "-" else str(Path(self.source).resolve())

    def job_params(self) -> dict[str, Any]:
        """What the job records about how it was asked for (per-row overrides live on the items)."""
        return {
            "source": self.source_name,
            **asdict(self.defaults),
            "seed": self.seed,
            "prompt_filter": list(self.blocklists),
            "checks": self.checks.as_json() if self.checks else None,
            **({"notify": self.notify.as_json()} if self.notify else {}),
            # The trace id of the request that made the job (a door's, contract/logs.py): on its events and logs.
            **({"trace_id": trace} if (trace := logs.TRACE_ID.get()) else {}),
        }


def limits_for(settings: Settings) -> Limits:
    """The reader's caps, for this store, from the settings their messages name (`catalogue.ENV`: each cap's
    PIXELMILL_* variable, whose setting is its name without the prefix, in lower case), and the reader of s3
    inputs with the settings' S3 configuration."""
    from contract.storage import S3Reader

    caps = {cap: getattr(settings, variable.removeprefix(ENV_PREFIX).lower()) for cap, variable in ENV.items()}
    return replace(Limits.for_storage(settings.resolved_storage_url, **caps), fetch=S3Reader(settings).read)


class RequestProblems(ValueError):
    """A request that cannot be submitted; `problems` are `where: field 'x': message` lines, as the CLI prints."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def problem_line(name: str, message: str, *, where: str = "request", flags: bool = False) -> str:
    """One problem as a door reports it: `where: field 'x': message`, or (`flags`, the CLI) `--x: message`,
    the message alone where it names its option or variable already."""
    if not flags:
        return f"{where}: field {name!r}: {message}"
    return message if message.startswith(("--", "PIXELMILL_")) else f"{option(name).flag}: {message}"


def make_request(
    settings: Settings,
    options: Options,
    *,
    source: Path | str | None = None,
    rows: Iterable[Mapping[str, object]] | None = None,
    notify: Notify | None = None,
    tenant_id: int,
    source_label: str | None = None,
    where: str = "request",
    flags: bool = False,
    input_roots: Sequence[str] = (),
) -> SubmitRequest:
    """The `SubmitRequest` of these options, the model resolved (`resolve_model`) and the job's checks resolved;
    raises RequestProblems listing every bad option (each named as `problem_line` says), and then every problem
    of the rows, read with stand-in values for the bad options. `tenant_id`: the caller's tenant, who will own
    the job; `source_label`: the source as the caller named it, for the digest (the intake's URL, not the
    temporary file it fetched it into); `input_roots`: where photo rows' inputs may be (the tenant's source
    roots)."""
    problems = option_problems(options)
    bad = {name for name, _ in problems}
    checks = None
    if not bad & {"gate", "gate_attempts", "best_of"}:
        try:
            checks = resolve_checks(
                settings, gate=options.gate, gate_attempts=options.gate_attempts, best_of=options.best_of
            )
        except ChecksError as exc:
            problems.append(("gate", str(exc)))
    width, height = parse_size(options.size) if "size" not in bad else (0, 0)
    lora = None
    lora_path, lora_scale = lora_choice(options)  # `lora` may be PATH:SCALE (producer/options.py split_lora)
    if lora_path is not None and "lora" not in bad:
        try:
            lora = check_lora(
                lora_path,
                lora_scale,
                input_roots,
                lora_dir=str(settings.lora_dir.absolute()) if settings.lora_dir else None,
                max_bytes=settings.lora_max_bytes,
                settings=settings,
            )
        except LoraProblem as exc:
            problems.append(("lora", str(exc)))
    if problems:
        lines = [problem_line(n, m, where=where, flags=flags) for n, m in problems]
        rows_too = not bad & {"template", "negative", "key", "delimiter", "encoding", "columns", "row_overrides"}
        if rows_too:  # the rows are read as asked, with stand-ins for only the bad numeric options
            lines += _row_problems(settings, options, width, height, source=source, rows=rows, roots=input_roots)
        raise RequestProblems(lines)
    try:
        read = _defaults(options, width, height, input_roots)  # then the numeric options, checked by now
        defaults = replace(
            read, steps=options.steps, guidance=options.guidance, images_per_item=options.images_per_item
        )
        return SubmitRequest(
            source=source,
            rows=rows,
            defaults=defaults,
            seed=options.seed,
            model=resolve_model(options.model or settings.default_model),
            name=options.name,
            catalogue=options.catalogue,
            request_id=options.request_id,
            tenant_id=tenant_id,
            digest=RequestDigest.of(
                replace(options, lora=lora_path, lora_scale=lora_scale),  # `a:0.5` is `a` at 0.5: one request
                source=source_label if source_label is not None else None if source is None else str(source),
                notify=notify,
            ),
            checks=checks,
            blocklists=blocklists(settings),
            notify=notify,
            max_retire=options.max_retire,
            allow_retire=options.allow_retire,
            priority=options.priority,
            lora=lora,
        )
    except (UsageError, ValueError) as exc:  # what the declaration cannot check (no source, or rows and source)
        raise RequestProblems([f"{where}: {exc}"]) from None


def _defaults(options: Options, width: int, height: int, roots: Sequence[str] = ()) -> Defaults:
    """The reader's `Defaults` of these options but for the numeric ones (steps, guidance, images per item),
    which keep the reader's defaults: `make_request` sets them once they are checked, `_row_problems` reads the
    rows with these standing in for bad ones (and for a bad size, 512x512)."""
    return Defaults(
        template=options.template,
        negative=options.negative,
        width=width or 512,
        height=height or 512,
        key_column=options.key,
        delimiter=options.delimiter,
        encoding=options.encoding,
        columns=tuple((options.columns or {}).items()),
        row_overrides=options.row_overrides,
        mode=options.mode if options.mode in MODES else "text",
        strength=options.strength if value_problem(option("strength"), options.strength) is None else STRENGTH_DEFAULT,
        input_roots=tuple(roots),
    )


def _row_problems(
    settings: Settings,
    options: Options,
    width: int,
    height: int,
    *,
    source: Path | str | None,
    rows: Iterable[Mapping[str, object]] | None,
    roots: Sequence[str] = (),
) -> list[str]:
    """An option is wrong, yet the caller hears of every problem at once: the rows are read with the job
    defaults standing in for the bad numeric options, so a key or template field the rows lack (or a bad row)
    is reported beside a bad size. Nothing when there is nothing to read, or the template itself is bad."""

    if rows is None and (source is None or str(source) == "-"):
        return []  # stdin cannot be read twice
    try:
        stand_in = _defaults(options, width, height, roots)
        limits = limits_for(settings)
        read = iter_rows(rows, stand_in, limits) if rows is not None else iter_catalogue(source or "", stand_in, limits)
        for _ in read:
            pass
    except CatalogueError as exc:
        return [str(p) for p in exc.problems]
    except (UsageError, ValueError, OSError):
        pass  # reported already, or by the submission once the options are fixed
    return []
