"""Logging with structured fields: `log.info("claimed", extra={"job": 3, "items": 4})` prints
`... claimed job=3 items=4`, so logs stay greppable and machine-parsable without a JSON dependency."""

from __future__ import annotations

import logging
import os

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


def configure(level: int | str = logging.INFO) -> None:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if isinstance(numeric, int) and numeric > logging.INFO:
        for name, value in _QUIET_ENV.items():
            os.environ.setdefault(name, value)
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.ERROR)
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
