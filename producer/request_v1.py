"""The v1 request message and intake: one v1 request (contract/schemas/request-v1.json) checked by `validate_v1`,
which reports problems in the CLI's `where: field 'x': message` form, and submitted through the one submission
path (`producer.request.make_request`, then `producer.submit.submit_request`).

`intake(settings, ledger, message, tenant)` is the whole life of one v1 request of one tenant (the door proved
who it is: the intake by the queue the message came on, HTTP by the token): a known `request_id` of that tenant
gets its job's events again and writes nothing; a bad request gets a `job.rejected` event and writes nothing else;
a good one becomes a job owned by the tenant whose `job.accepted` event is committed with it. What a request points
at stays inside its tenant: `reply_to` under the tenant's reply prefix (contract/replies.py), `source` under its
source roots (producer/source_roots.py).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from contract import events
from contract.events import Notify
from contract.ledger import Ledger
from contract.replies import reply_to_problem
from contract.settings import Settings
from contract.tenants import TenantInfo
from contract.webhook_target import WebhookUrlError, check_webhook_target
from producer.catalogue import CatalogueError, UsageError, surrogate_problem
from producer.options import Options, from_v1, option_problems, v1_field_names
from producer.request import RequestProblems, make_request, problem_line
from producer.source_roots import REFUSED, allowed_source
from producer.submit import Submission, existing_job, submit_request

log = logging.getLogger(__name__)


TASK_SUBMIT = "pixelmill.submit"


INTAKE_QUEUE = "pixelmill.intake"  # the tenant `default`'s intake queue; tenant NAME's is `pixelmill.intake.NAME`


REQUEST_VERSION = 1


@functools.cache
def request_schema() -> dict[str, Any]:
    """contract/schemas/request-v1.json: the documented shape of a v1 request."""
    return json.loads(resources.files("contract").joinpath("schemas/request-v1.json").read_text())  # type: ignore[no-any-return]


@dataclass
class V1:
    """A v1 request whose shape is valid (its values are checked again by `make_request` and the reader)."""

    request_id: str
    options: Options
    notify: Notify
    rows: list[dict[str, object]] | None = None
    source: str | None = None


def usable_reply_to(reply_to: Any, tenant: TenantInfo) -> str | None:
    """`reply_to` if this tenant may be answered there, else None: a refused reply queue hears nothing, not even
    the rejection (it could be a name the broker uses itself); the refusal is logged instead."""
    if not isinstance(reply_to, str):
        return None
    if (problem := reply_to_problem(reply_to, tenant.reply_prefix)) is not None:
        log.warning(
            "reply_to refused; answering nowhere",
            extra={"tenant": tenant.name, "reply_to": reply_to[:60], "why": problem},
        )
        return None
    return reply_to


def destinations_of(message: Any, tenant: TenantInfo) -> Notify:
    """The destinations of a message, whatever else is wrong with it: a caller with a usable reply queue learns
    that its request was rejected. A webhook is used only once the request is valid (`validate_v1`)."""
    if not isinstance(message, dict):
        return Notify()
    wanted = message.get("events")
    types = tuple(t for t in wanted if t in events.EVENT_TYPES) if isinstance(wanted, list) else events.JOB_EVENTS
    return Notify(
        reply_to=usable_reply_to(message.get("reply_to"), tenant),
        events=tuple(dict.fromkeys(events.JOB_EVENTS + types)),
    )


def request_id_of(message: Any) -> str | None:
    rid = message.get("request_id") if isinstance(message, dict) else None
    usable = isinstance(rid, str) and rid.strip() and len(rid) <= 200 and surrogate_problem(rid) is None
    return rid if usable else None  # an unusable one is refused by validate_v1, and never looked up or stored


def _unstorable(value: Any, path: str = "") -> Iterator[str]:
    """A problem for every string (value or key) in a decoded JSON message that holds a lone surrogate: JSON
    can escape one ("\\ud800"), and no database takes it."""
    if isinstance(value, str):
        if (problem := surrogate_problem(value)) is not None:
            yield f"request: field {path or 'request'!r}: {problem}"
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := surrogate_problem(key)) is not None:
                yield f"request: field name {where!r}: {problem}"
            yield from _unstorable(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, f"{path}.{index}" if path else str(index))


def validate_v1(settings: Settings, message: Any, tenant: TenantInfo) -> V1:
    """The message against request-v1.json, then the rules a schema cannot say (among them what the tenant may
    point at); raises RequestProblems."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(request_schema())
    problems = []
    top, nested = v1_field_names()
    for error in sorted(validator.iter_errors(message), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "request"
        at = list(error.absolute_path)
        if at[:1] and at[0] in top or at[:1] == ["options"] and at[1:2] and at[1] in nested:
            continue  # an option's value: checked by `make_request`, with the same message as in every door
        if error.validator == "oneOf" and not error.absolute_path:
            problems.append("request: give exactly one of 'rows' (inline objects) and 'source' (a catalogue location)")
        elif error.validator == "additionalProperties" or not error.absolute_path:
            problems.append(f"request: {error.message}")
        else:
            problems.append(f"request: field {path!r}: {error.message}")
    if isinstance(message, dict):  # options are checked as in every door (`make_request`), not twice
        unchecked = {k: v for k, v in message.items() if k not in top}
        if isinstance(message.get("options"), dict):
            unchecked["options"] = {k: v for k, v in message["options"].items() if k not in nested}
        problems += itertools.islice(_unstorable(unchecked), 1000)
        if problems:
            problems += [problem_line(n, m) for n, m in option_problems(from_v1(message))]
    if problems:
        raise RequestProblems(problems)
    rows = message.get("rows")
    if rows is not None and len(rows) > settings.intake_max_rows:
        raise RequestProblems(
            [
                f"request: field 'rows': {len(rows)} rows, more than PIXELMILL_INTAKE_MAX_ROWS "
                f"({settings.intake_max_rows}) inline; send the catalogue as 'source'"
            ]
        )
    _check_pointers(message, tenant)
    webhook = message.get("webhook")
    if webhook is not None:
        try:
            # Resolved and checked now so the sender hears it; the dispatcher checks again before every attempt.
            check_webhook_target(
                webhook,
                allow_http=settings.webhook_allow_http,
                allow_hosts=settings.webhook_allow_hosts,
                tenant_hosts=tenant.webhook_hosts,
            )
        except WebhookUrlError as exc:
            raise RequestProblems([f"request: field 'webhook': {exc}"]) from None
        if not settings.webhook_secret:
            raise RequestProblems(
                [
                    "request: field 'webhook': this installation has no PIXELMILL_WEBHOOK_SECRET to "
                    "sign webhooks with; ask its operator to set one, or use reply_to"
                ]
            )
    options = from_v1(message)
    notify = destinations_of(message, tenant)
    source = message.get("source")
    return V1(
        request_id=message["request_id"],
        options=options,
        rows=rows,
        source=allowed_source(source, tenant.source_roots) if source is not None else None,
        notify=Notify(reply_to=notify.reply_to, webhook=webhook, events=notify.events),
    )


def _check_pointers(message: dict[str, Any], tenant: TenantInfo) -> None:
    """`reply_to` and `source` name only what the tenant owns; raises RequestProblems."""
    problems = []
    reply_to = message.get("reply_to")
    if reply_to is not None and (problem := reply_to_problem(reply_to, tenant.reply_prefix)) is not None:
        problems.append(f"request: field 'reply_to': {problem}")
    source = message.get("source")
    if source is not None and allowed_source(source, tenant.source_roots) is None:
        problems.append(REFUSED)  # the same words for every refused path: no oracle, nothing of the file echoed
    if problems:
        raise RequestProblems(problems)


@contextlib.contextmanager
def open_source(settings: Settings, source: str) -> Iterator[Path]:
    """A local path for a request's `source`: an s3:// object is downloaded (PIXELMILL_S3_* settings) to a
    temporary file with the same suffixes (.csv, .jsonl, .gz), removed afterwards."""
    if not source.startswith("s3://"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise RequestProblems([f"request: field 'source': {source!r} is not a file the intake can read"])
        yield path
        return
    from contract.storage import FetchError, S3Reader

    bucket, _, key = source.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise RequestProblems([f"request: field 'source': {source!r} is not s3://bucket/key"])
    suffix = "".join(Path(key).suffixes[-2:])
    with tempfile.NamedTemporaryFile(suffix=suffix) as fh:
        try:
            S3Reader(settings).copy(source, fh, None)  # the catalogue's own caps bound what is read of it
        except FetchError as exc:
            why = "does not exist" if exc.why == "missing" else exc.detail
            raise RequestProblems([f"request: field 'source': cannot read {source}: {why}"]) from None
        fh.flush()
        yield Path(fh.name)


@dataclass
class IntakeResult:
    status: Literal["accepted", "duplicate", "rejected"]
    job: int | None = None
    problems: list[str] = field(default_factory=list)
    submission: Submission | None = None


def resend_job_events(ledger: Ledger, job_id: int, notify: Notify) -> int:
    """A repeated request: its job's events (accepted, and finished if it is) go out again."""
    with ledger.session() as session:
        return events.resend(session, events.job_event_uids(session, job_id), notify)


def reject(
    ledger: Ledger, request_id: str | None, message: Any, notify: Notify, problems: list[str], *, tenant_id: int
) -> None:
    """`job.rejected`, written on its own: nothing else of a bad request is ever written. Its scope (and so its
    event id) holds the tenant: one tenant's rejection is never re-sent to another's destinations."""
    import hashlib

    scope = f"tenant:{tenant_id}:" + (
        f"request:{request_id}"
        if request_id is not None
        else "message:" + hashlib.sha256(json.dumps(message, sort_keys=True, default=str).encode()).hexdigest()
    )
    with ledger.session() as session:
        if not events.emit(
            session,
            type_=events.JOB_REJECTED,
            scope=scope,
            request_id=request_id,
            notify=notify,
            tenant_id=tenant_id,
            data={"problems": problems[:1000], "problem_count": len(problems)},
        ):
            events.resend(session, [events.event_uid(scope, events.JOB_REJECTED)], notify)


def submit_v1(
    settings: Settings, ledger: Ledger, request: V1, *, tenant_id: int, input_roots: Sequence[str] = ()
) -> Submission:
    """Submit a validated v1 request of the tenant's through the one submission path; raises RequestProblems
    (a `request_id` the tenant used for another request: `producer.submit.REQUEST_ID_REUSED`). Photo rows'
    inputs must lie under `input_roots` (the tenant's source roots)."""
    try:
        if request.rows is not None:
            asked = make_request(
                settings,
                request.options,
                rows=request.rows,
                notify=request.notify,
                tenant_id=tenant_id,
                input_roots=input_roots,
            )
            return submit_request(settings, ledger, asked)
        assert request.source is not None
        with open_source(settings, request.source) as path:
            asked = make_request(
                settings,
                request.options,
                source=path,
                notify=request.notify,
                tenant_id=tenant_id,
                source_label=request.source,
                input_roots=input_roots,
            )
            return submit_request(settings, ledger, asked)
    except CatalogueError as exc:
        raise RequestProblems([str(p) for p in exc.problems]) from None
    except (UsageError, OSError) as exc:
        raise RequestProblems([f"request: {exc}"]) from None


def _job_of(ledger: Ledger, tenant_id: int, request_id: str) -> int | None:
    """The job the tenant's request_id already made, if any."""
    with ledger.session(readonly=True) as session:
        job = existing_job(session, tenant_id, request_id)
        return job.id if job is not None else None


def intake(settings: Settings, ledger: Ledger, message: Any, *, tenant: TenantInfo) -> IntakeResult:
    """Handle one v1 request of `tenant`'s (see the module docstring). A known `request_id` is answered by
    `submit_request` once the request is validated: the same request gets its job's events again, a different
    one `job.rejected` (the first caller's events never reach the second's destinations). Raises only for trouble
    the request did not cause (the ledger or broker unreachable): the intake task then leaves the message to be
    delivered again."""
    request_id = request_id_of(message)
    notify = destinations_of(message, tenant)
    try:
        request = validate_v1(settings, message, tenant)
        submission = submit_v1(settings, ledger, request, tenant_id=tenant.id, input_roots=tenant.source_roots)
    except RequestProblems as exc:
        reject(ledger, request_id, message, notify, exc.problems, tenant_id=tenant.id)
        log.info("request rejected", extra={"request_id": request_id, "problems": len(exc.problems)})
        return IntakeResult("rejected", problems=exc.problems)
    if submission.existing:  # a twin of this request won the race: same job, its events again
        resend_job_events(ledger, submission.job, request.notify)
        return IntakeResult("duplicate", job=submission.job, submission=submission)
    log.info("request accepted", extra={"request_id": request_id, "job": submission.job})
    return IntakeResult("accepted", job=submission.job, submission=submission)


def answer_failure(
    settings: Settings, ledger: Ledger, message: Any, exc: BaseException, *, tenant: TenantInfo
) -> IntakeResult:
    """`intake` raised something unexpected. If the job was committed before it (publishing failed after the
    commit: its pending items are published by the reconciler), answer as for a repeat; else nothing was
    written, and the caller gets a `job.rejected` naming the error rather than silence."""
    request_id = request_id_of(message)
    if request_id is not None:
        job_id = _job_of(ledger, tenant.id, request_id)
        if job_id is not None:
            resend_job_events(ledger, job_id, destinations_of(message, tenant))
            return IntakeResult("duplicate", job=job_id)
    problems = [
        f"request: the intake failed ({type(exc).__name__}: {str(exc)[:300]}); nothing was written. "
        f"Send it again; if it fails again, tell the operator"
    ]
    reject(ledger, request_id, message, destinations_of(message, tenant), problems, tenant_id=tenant.id)
    return IntakeResult("rejected", problems=problems)


def reject_unread(
    ledger: Ledger, tenant: TenantInfo, message_id: str, reply_to: str | None, problem: str
) -> IntakeResult:
    """A message the intake would not read as a request (too large, nested too deep, not one argument): nothing
    is written but a `job.rejected`, sent to `reply_to` when the tenant may be answered there. `message_id` (the
    Celery task id) tells two such messages apart."""
    notify = Notify(reply_to=usable_reply_to(reply_to, tenant), events=events.JOB_EVENTS)
    reject(
        ledger,
        None,
        {"unread": problem, "id": message_id, "reply_to": reply_to},
        notify,
        [problem],
        tenant_id=tenant.id,
    )
    log.info("message refused unread", extra={"tenant": tenant.name, "problem": problem[:200]})
    return IntakeResult("rejected", problems=[problem])
