"""Where images go: one small interface, chosen by PIXELMILL_STORAGE_URL.

Keys are deterministic and objects are created once: the first complete write of a key wins and later
writes of it change nothing, so the sha256 recorded in the ledger always describes the stored bytes, even
when two workers (say, on different GPU models) both finish the same item.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from contract.host_files import private_data_dir

if TYPE_CHECKING:
    from contract.settings import Settings

TEMP_PREFIX = ".tmp-"  # LocalStorage's temp files, swept by the reconciler when a store was interrupted
_CONFLICT_RETRIES = 5  # 409 answers to a conditional PUT while a concurrent upload of the key finishes


class Storage(Protocol):
    url: str

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        """Store `data` under `key` unless an object is there already; True if this call created it."""
        ...

    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def locate(self, key: str, expires: int) -> str:
        """A URL a person can open: a presigned GET on S3, a file URI locally."""
        ...


class LocalStorage:
    """A directory. Objects appear whole (temp file, fsync, hard link), so a crash never leaves half an
    image, and a link never replaces an existing file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new directory entry must survive a power cut
        finally:
            os.close(dir_fd)
        return True

    def sweep_temp(self, grace: float) -> int:
        """Remove temp files of stores that were interrupted (a SIGKILL between mkstemp and unlink), older
        than `grace` seconds so a store in progress keeps its file; returns how many were removed."""
        cutoff, removed = time.time() - grace, 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(folder, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith(TEMP_PREFIX):
                yield key

    def locate(self, key: str, expires: int) -> str:
        return self._path(key).as_uri()


class S3Storage:
    """A bucket and prefix on any S3-compatible store (AWS, MinIO, R2, Ceph).

    Settings chosen for stores that are not AWS: "standard" retries with bounded attempts, checksums only
    when an operation requires them plus an explicit Content-MD5 (the CRC32 default of newer botocore is
    rejected by several of them), path-style addressing with an endpoint URL. Objects are created with
    If-None-Match: * where the store supports it, so the first complete upload of a key wins; the sha256 of
    the bytes travels as object metadata."""

    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.conditional = settings.s3_conditional_writes
        style = settings.s3_addressing_style or ("path" if settings.s3_endpoint_url else "auto")
        config = Config(
            region_name=settings.s3_region,
            retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},  # first try included
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": style},
            signature_version="s3v4",  # presigned URLs too: R2 and recent MinIO/Ceph accept only SigV4
            max_pool_connections=settings.upload_threads + 2,  # the upload threads, plus reads beside them
            connect_timeout=10,
            read_timeout=60,
        )
        # A session per storage: boto3's default session is not safe to share between threads.
        self.client = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"storage key escapes the storage prefix: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._key(key)
        if not self.conditional and self.exists(key):
            return False
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if self.conditional else {}
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=data,
                    ContentType=content_type,
                    ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),  # integrity, not security
                    Metadata={"sha256": hashlib.sha256(data).hexdigest()},
                    **extra,
                )
                return True
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 412:
                    return False  # already there (perhaps our own earlier try whose reply was lost)
                if status != 409 or attempt == _CONFLICT_RETRIES:
                    raise
                # 409 ConditionalRequestConflict: another upload of this key is in progress; its outcome
                # decides (AWS asks clients to retry).
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(base) :]

    def locate(self, key: str, expires: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires
        )
        return url


class FetchError(ValueError):
    """Why an s3:// object could not be read: `why` is "missing", "too large" or "unreadable"; callers word it."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(detail or why)
        self.why, self.detail = why, detail


class S3Reader:
    """Reads s3://bucket/key objects with the configured PIXELMILL_S3_* settings, each bounded in size: the one
    reader of a request's s3 locations (a v1 `source`, a photo row's `image`/`mask`, a `lora`) at submit, and of
    inputs on the worker at run time. Whether a location may be read at all is the caller's rule
    (producer/source_roots.py: under the tenant's s3 roots). The client is made on first use and kept."""

    CHUNK = 1024 * 1024

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = S3Storage("reader", "", self.settings).client  # the client does not depend on a bucket
        return self._client

    def copy(self, location: str, stream: IO[bytes], max_bytes: int | None) -> int:
        """Write the object at `location` to `stream`; its size. FetchError if it is missing, over `max_bytes`
        (None: no bound; checked from the object's length before a byte is read, and again while reading) or
        cannot be read."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = location.removeprefix("s3://").partition("/")
        if not location.startswith("s3://") or not bucket or not key:
            raise FetchError("unreadable", f"{location[:200]!r} is not s3://bucket/key")
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or error.get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
                raise FetchError("missing") from None
            raise FetchError("unreadable", str(error.get("Code") or exc)[:200]) from None
        except BotoCoreError as exc:
            raise FetchError("unreadable", str(exc)[:200]) from None
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if max_bytes is not None and isinstance(length, int) and length > max_bytes:
                raise FetchError("too large")
            total = 0
            while chunk := body.read(self.CHUNK):
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise FetchError("too large")
                stream.write(chunk)
        except (BotoCoreError, OSError) as exc:
            raise FetchError("unreadable", str(exc)[:200]) from None
        finally:
            body.close()
        return total

    def read(self, location: str, max_bytes: int) -> bytes:
        """The object's bytes (see `copy`)."""
        buffer = io.BytesIO()
        self.copy(location, buffer, max_bytes)
        return buffer.getvalue()


def create_or_get(storage: Storage, key: str, data: bytes, content_type: str) -> bytes:
    """Store `data` at `key` once; if an earlier attempt stored it (and died before recording it), return the
    bytes already there, which are what gets recorded."""
    if not storage.create(key, data, content_type):
        data = storage.get(key)
    return data


def open_storage(settings: Settings) -> Storage:
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if settings.storage_url is None:  # the default, inside the data directory: make that private first
            private_data_dir(settings.data_path)
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "":
        return LocalStorage(Path(url))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"PIXELMILL_STORAGE_URL: no bucket in {url!r} (use s3://bucket/prefix)")
        return S3Storage(parsed.netloc, unquote(parsed.path), settings)
    raise ValueError(
        f"PIXELMILL_STORAGE_URL: unsupported scheme {parsed.scheme!r} in {url!r} "
        "(use file:///path or s3://bucket/prefix)"
    )
