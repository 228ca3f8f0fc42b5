"""Logging with structured fields: `log.info("claimed", extra={"job": 3, "items": 4})` prints
`... claimed job=3 items=4`, so logs stay greppable and machine-parsable without a JSON dependency."""

from __future__ import annotations

import logging

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


def _render(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def configure(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
