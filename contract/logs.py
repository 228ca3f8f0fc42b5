"""Logging with structured fields: `log.info("claimed", extra={"job": 3, "items": 4})` prints
`... claimed job=3 items=4`, so logs stay greppable and machine-parsable without a JSON dependency; with
PIXELMILL_LOG_FORMAT=json the same record is one JSON object (`JsonFormatter`), with the trace id of the request
being served (`TRACE_ID`, set by the doors).

Every record reaching the handler `configure` installs is masked first (`MaskingFilter`): URL passwords and
userinfo, and secret-looking query values (`token=`, `sig=`, ...), in the message, its fields and its traceback,
whichever library logged it (httpx logs whole request URLs at INFO)."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from contract.faults import mask

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name.startswith("celery"):  # Celery repeats its message's fields in `data`
            return text
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if fields:
            text += " " + " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        return text


class JsonFormatter(logging.Formatter):
    """PIXELMILL_LOG_FORMAT=json: one JSON object per line, the record's `extra=` fields (job, item, tenant, ...)
    and the trace id of the request being served (`trace_id`) beside time, level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


# The trace id of the request this thread or task is serving: set by the doors (the HTTP API from a W3C
# `traceparent` or `X-Request-Id` header, else a new one; the intake from its task id), added to every record.
TRACE_ID: ContextVar[str | None] = ContextVar("pixelmill_trace_id", default=None)


class TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (trace := TRACE_ID.get()) is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace
        return True


def trace_of(traceparent: str | None, request_id: str | None = None) -> str:
    """The trace id of a request: a valid W3C `traceparent`'s, else its request id (bounded), else a new one."""
    if traceparent:
        parts = traceparent.strip().split("-")
        if len(parts) == 4 and re.fullmatch(r"[0-9a-f]{32}", parts[1]) and parts[1] != "0" * 32:
            return parts[1]
    if request_id and re.fullmatch(r"[\w.:-]{1,64}", request_id):
        return request_id
    return uuid.uuid4().hex


_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s@?#]+@")


def mask_text(text: str) -> str:
    """`faults.mask`, plus any userinfo of an http(s) URL (a token sent as the user name has no password)."""
    return _USERINFO.sub(r"\1***@", mask(text))


class MaskingFilter(logging.Filter):
    """Masks secrets in a record before any handler writes it (issue 22, finding 12)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are masked one by one where possible: some formatters (uvicorn's access log) read them.
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:  # a secret in a non-string argument (httpx logs URL objects)
            record.msg, record.args = masked, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, mask_text(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


# Loggers that write through handlers of their own (uvicorn's dictConfig, propagate=False), not the root's: the
# masking goes on the loggers themselves, where a later dictConfig leaves it.
_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _render(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


# Libraries that announce optional pieces a host may lack (torchao's CUDA kernels, triton, torchvision), draw
# progress bars, or warn about their own deprecations: not the user's business unless asked for (-v, or a
# worker's INFO log). Their verbosity variables must be set before they are imported, as here.
_CHATTY = ("torchao", "torch.utils._pytree", "transformers", "diffusers", "huggingface_hub")
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def log_format() -> str:
    """PIXELMILL_LOG_FORMAT (`kv` unless the settings say `json`; settings that do not load leave `kv`)."""
    try:
        from contract.settings import get_settings

        return get_settings().log_format
    except Exception:  # noqa: BLE001 (the command reports bad settings itself)
        return "kv"


def configure(level: int | str = logging.INFO) -> None:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if isinstance(numeric, int) and numeric > logging.INFO:
        for name, value in _QUIET_ENV.items():
            os.environ.setdefault(name, value)
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.ERROR)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format() == "json" else KeyValueFormatter())
    handler.addFilter(MaskingFilter())
    handler.addFilter(TraceFilter())
    for name in _OWN_HANDLERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
