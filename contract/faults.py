"""What went wrong, and whose fault it is: URL checks, secret masking, and the infrastructure/item split.

An *infrastructure* failure (storage, database or broker unreachable, timing out, full, or answering 5xx)
says nothing about the item: the same item will work once the service is back, so it must not use up the
item's attempts. An *item* failure (generation raised, output rejected) keeps the bounded attempts. Shared by
the CLI (messages, not tracebacks) and the worker (which failures back off).
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from urllib.parse import urlparse

_SECRET = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_SECRET_QUERY = re.compile(r"(?i)((?:password|secret|token|sig|signature|x-amz-signature)=)[^&\s]+")

REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "socket", "unix")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
BROKER_SCHEMES = (*REDIS_SCHEMES, *AMQP_SCHEMES, "memory", "sentinel")
STORAGE_SCHEMES = ("file", "s3")
NAME_MAX = 200  # jobs.name is VARCHAR(200)


def mask(text: str) -> str:
    """`text` with every `scheme://user:password@` password and secret-looking query value replaced by ***."""
    text = _SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def check_url(field: str, url: str) -> str:
    """Validate a database, broker or storage URL's shape (raises ValueError naming the variable)."""
    variable = f"PIXELMILL_{field.upper()}"
    shown = mask(url)
    if "\x00" in url:
        raise ValueError(f"{variable} contains a NUL byte")
    if field == "database_url":
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(
                f"{variable}={shown!r} is not a database URL; use sqlite:////path/ledger.db or "
                "postgresql+psycopg://user:password@host:5432/db"
            ) from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):  # postgres:// too (Heroku's spelling)
            raise ValueError(
                f"{variable}={shown!r}: use sqlite:////path/ledger.db or "
                "postgresql+psycopg://user:***@host:5432/db (the psycopg 3 driver); "
                "only SQLite and PostgreSQL ledgers are supported"
            )
        return url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if field == "broker_url":
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"{variable}={shown!r}: unsupported broker; use redis://host:6379/0, "
                "rediss://…, redis+socket:///path or amqp://user:password@host/vhost"
            )
        return url
    if field == "storage_url":
        if scheme == "":
            return url  # a plain path
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(
                f"{variable}={shown!r}: unsupported scheme {scheme!r}; use file:///path or s3://bucket/prefix"
            )
        parsed_url = urlparse(url)
        if scheme == "s3" and (not parsed_url.netloc or "@" in parsed_url.netloc or ":" in parsed_url.netloc):
            raise ValueError(
                f"{variable}={shown!r}: use s3://bucket/prefix (credentials go in AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, the endpoint in PIXELMILL_S3_ENDPOINT_URL)"
            )
        if scheme == "file" and parsed_url.netloc not in ("", "localhost"):
            raise ValueError(f"{variable}={shown!r}: use file:///absolute/path (three slashes)")
        return url
    return url


def is_infra(exc: BaseException) -> bool:
    """True for failures of a service the item depends on (it will work once the service is back)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _infra_one(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _infra_one(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:  # disk full, permission, unreachable; not PIL's
        return True  # errno-less "cannot write mode …"
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith("sqlalchemy") and name in (
        "OperationalError",
        "InterfaceError",
        "TimeoutError",
        "DisconnectionError",
    ):
        return True
    if module.startswith(("kombu", "redis", "amqp")) and (
        "Connection" in name or "Operational" in name or "Timeout" in name or name == "BusyLoadingError"
    ):
        return True
    if module.startswith(("botocore", "urllib3")):
        if name in (
            "EndpointConnectionError",
            "ConnectionClosedError",
            "ReadTimeoutError",
            "ConnectTimeoutError",
            "ConnectionError",
            "HTTPClientError",
            "ProxyConnectionError",
            "ResponseStreamingError",
            "IncompleteReadError",
            "ProtocolError",
        ):
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            meta = response.get("ResponseMetadata", {})
            code = response.get("Error", {}).get("Code", "")
            status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
            if (isinstance(status, int) and status >= 500) or code in (
                "SlowDown",
                "RequestTimeout",
                "ServiceUnavailable",
                "InternalError",
            ):
                return True
    return False


def backoff(first_failure: datetime | None, now: datetime, *, base: float, cap: float) -> timedelta:
    """Delay before the next try: about as long as the outage has lasted so far (so tries are spaced
    exponentially: base, 2·base, 4·base …), capped, with ±25 % jitter so a fleet does not retry in step."""
    elapsed = (now - first_failure).total_seconds() if first_failure is not None else 0.0
    delay = min(cap, max(base, elapsed))
    return timedelta(seconds=delay * random.uniform(0.75, 1.25))  # noqa: S311 (jitter, not security)
