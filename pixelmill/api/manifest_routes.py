"""The HTTP routes that export results: a job's manifest, the named catalogues and a catalogue's manifest,
streamed in constant memory (`manifest_chunks`) as `pixelmill manifest` writes them.

No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime."""

import queue
import re
import threading
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from contract.ledger import Ledger
from contract.tenants import owned_job
from pixelmill.api import stream_manifest
from pixelmill.api.access import Auth, Served
from producer.catalogue_runs import check_name, has_entries, list_catalogues, unknown_catalogue
from producer.manifest import WRITERS, ManifestError, iter_manifest, parquet_schema

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Job id.")]  # a BIGINT: larger ids are a 422, not a 500
Format = Annotated[Literal["csv", "jsonl", "parquet"], Query()]
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_CHUNK = 64 * 1024

router = APIRouter()


class _Gone(Exception):
    """The client went away: the writer stops."""


class _Pipe:
    """A write-only file for the manifest writers: what they write goes to a bounded queue in ~64 KiB chunks,
    so a slow client holds back the database cursor instead of the server buffering the manifest."""

    closed = False

    def __init__(self, out: queue.Queue[bytes | BaseException | None], stop: threading.Event) -> None:
        self.out, self.stop = out, stop
        self.parts: list[bytes] = []
        self.size = self.written = 0

    def write(self, data: str | bytes) -> int:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        self.written += len(chunk)
        if self.size >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.parts:
            self.put(b"".join(self.parts))
            self.parts, self.size = [], 0

    def put(self, item: bytes | BaseException | None) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Gone

    def tell(self) -> int:
        return self.written

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass


def manifest_chunks(
    ledger: Ledger, job_id: int | None, fmt: str, *, tenant_id: int, catalogue: str | None = None
) -> Iterator[bytes]:
    """The tenant's job's (or, with `catalogue`, catalogue's) manifest in `fmt`, written by `producer.manifest`'s
    writer in a thread of its own and handed over in chunks through a queue of 8: memory stays flat whatever
    the job's size."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()
    pipe = _Pipe(chunks, stop)

    def produce() -> None:
        try:
            rows = (
                stream_manifest(ledger, iter_manifest, tenant_id=tenant_id, catalogue=catalogue)
                if catalogue
                else stream_manifest(ledger, iter_manifest, tenant_id=tenant_id, job=job_id)
            )
            WRITERS[fmt](rows, pipe)  # type: ignore[operator]
            pipe.flush()
            pipe.put(None)
        except _Gone:
            pass
        except BaseException as exc:  # noqa: BLE001 (handed to the response, which aborts)
            try:
                pipe.put(exc)
            except _Gone:
                pass

    threading.Thread(target=produce, name=f"manifest-{catalogue or job_id}", daemon=True).start()
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        stop.set()


def manifest_responses(rows: str, missing: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of a manifest route: `rows` streamed in every format, or 404 `missing`."""
    return {
        200: {"description": rows, "content": {m.split(";")[0]: {} for m in MEDIA_TYPES.values()}},
        404: {"description": missing},
        401: {"description": "auth"},
        422: {"description": "bad format (parquet: pyarrow not installed on the server)"},
    }


def check_format(fmt: str) -> None:
    """422 for parquet on a server without pyarrow, before anything is looked up."""
    if fmt == "parquet":
        try:
            parquet_schema()
        except ManifestError as exc:
            raise HTTPException(422, str(exc)) from None


def streamed(chunks: Iterator[bytes], fmt: str, filename: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'},
    )


@router.get(
    "/v1/jobs/{job_id}/manifest",
    response_class=StreamingResponse,
    responses=manifest_responses("one row per item (id order), streamed", "no such job"),
)
def get_manifest(job_id: JobId, served: Served, who: Auth, format: Format = "csv") -> StreamingResponse:
    """The job's manifest (`pixelmill manifest --job`): object key, sha256, size, scores, safety,
    provenance and error per item, as CSV (with a header row), JSON lines or Parquet."""
    check_format(format)
    with served.ledger.session(readonly=True) as session:
        if owned_job(session, who.id, job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
    return streamed(manifest_chunks(served.ledger, job_id, format, tenant_id=who.id), format, f"job-{job_id}")


@router.get("/v1/catalogues", responses={401: {"description": "auth"}})
def get_catalogues(served: Served, who: Auth) -> dict[str, Any]:
    """The caller's named catalogues (`pixelmill catalogues --json`): runs, current and retired entries, the
    last run and its changes."""
    with served.ledger.session(readonly=True) as session:
        return {"catalogues": [c.as_dict() for c in list_catalogues(session, who.id)]}


@router.get(
    "/v1/catalogues/{name}/manifest",
    response_class=StreamingResponse,
    responses=manifest_responses(
        "one row per entry (key order, retired ones included), streamed",
        "no such catalogue (the closest name, if one is close)",
    ),
)
def get_catalogue_manifest(
    name: Annotated[str, Path(min_length=1, max_length=200, description="Catalogue name (submit --catalogue).")],
    served: Served,
    who: Auth,
    format: Format = "csv",
) -> StreamingResponse:
    """The catalogue's manifest (`pixelmill manifest --catalogue`): one row per entry, its `change`, and the
    item serving it now, in the job manifest's columns and formats."""
    check_format(format)
    try:
        check_name(name)  # a name no run could have had (control characters) is never looked up
    except ValueError:
        raise HTTPException(404, f"no catalogue {name!r}") from None
    with served.ledger.session(readonly=True) as session:
        if not has_entries(session, who.id, name):
            raise HTTPException(404, unknown_catalogue(session, who.id, name))
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
    chunks = manifest_chunks(served.ledger, None, format, tenant_id=who.id, catalogue=name)
    return streamed(chunks, format, f"catalogue-{filename}")
