"""The hand-off to a shop system: one row per item (or per catalogue entry) with its object, URL, checksum,
scores and outcome, streamed from the ledger in constant memory (`yield_per` on one query: a server-side
cursor on PostgreSQL) and written as CSV, JSONL or Parquet.

`iter_manifest` yields `ManifestRow`s; the writers take any iterable of them, so the command line and the
front door produce the same rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import IO, Any

from sqlalchemy import Select, String, Text, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from contract.schema import CatalogueEntry, Image, Item, Job
from contract.storage import Storage
from contract.tenants import owned_job
from producer.catalogue_runs import has_entries, unknown_catalogue

SCORES = ("clip_score", "aesthetic", "sharpness", "exposure", "clipped_dark", "clipped_light", "white_background")
FORMATS = ("csv", "jsonl", "parquet")
_STREAM = 2000  # rows fetched per round trip


class ManifestError(RuntimeError):
    """The manifest cannot be made as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One product image as the shop system receives it. `object_key`/`url` are set only for a public
    image (never for a quarantined one); `change` is the catalogue's change (new, changed, unchanged,
    retired), replaced by failed/blocked/cancelled when the serving item ended so; empty for a plain job."""

    key: str
    variant: int
    change: str
    state: str
    object_key: str | None
    url: str | None
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    format: str | None
    job: int | None
    item: int | None
    generated_at: str | None
    prompt: str | None
    seed: int | None
    model: str | None
    engine: str | None
    clip_score: float | None
    aesthetic: float | None
    sharpness: float | None
    exposure: float | None
    clipped_dark: float | None
    clipped_light: float | None
    white_background: float | None
    safety: str | None  # ok | blocked:<flagged,...> | unchecked
    provenance: str | None  # the C2PA signer, or "xmp" (the IPTC digital source type only)
    error: str | None  # failed items: the last line of their last error
    input: str | None  # photo rows: the photo's path as checked at submit (docs/catalogues.md, "Product photos")
    input_sha256: str | None  # and the sha256 of its bytes

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in COLUMNS}


COLUMNS = tuple(f.name for f in fields(ManifestRow))
astuple = attrgetter(*COLUMNS)  # dataclasses.astuple deep-copies: 10x slower over 100k rows


def _columns() -> tuple[Any, ...]:
    """Flat columns; JSON fields are extracted by the database (JSON_EXTRACT / ->) and timestamps and states
    come back as plain values, so Python decodes no JSON per row: 100k rows stream in seconds."""
    score = Image.scores
    return (
        Item.id,
        Item.job_id,
        Item.item_key,
        Item.variant,
        type_coerce(Item.state, String).label("state"),
        Item.prompt,
        Item.seed,
        Item.error,
        Item.block_reason,
        Job.model,
        Image.storage_key,
        Image.sha256,
        Image.bytes,
        Image.width,
        Image.height,
        Image.format,
        Image.engine_id,
        type_coerce(Image.created, String).label("created"),
        *(score[name].as_float().label(name) for name in SCORES),
        (Image.safety.is_(None) | (func.coalesce(cast(Image.safety, Text), "null") == "null")).label("unchecked"),
        Image.safety["blocked"].as_boolean().label("safety_blocked"),
        Image.provenance["c2pa"].as_boolean().label("c2pa"),
        Image.provenance["signer"].as_string().label("signer"),
        Image.provenance["xmp"].as_boolean().label("xmp"),
        Image.visibility,
        Item.inputs["image"].as_string().label("input"),
        Item.inputs["image_sha256"].as_string().label("input_sha256"),
    )


def job_query(job_id: int) -> Select[Any]:
    return (
        select(*_columns())
        .select_from(Item)
        .join(Job, Job.id == Item.job_id)
        .outerjoin(Image, Image.item_id == Item.id)
        .where(Item.job_id == job_id)
        .order_by(Item.id)
    )


def iter_manifest(
    session: Session,
    *,
    tenant_id: int,
    job: int | None = None,
    catalogue: str | None = None,
    storage: Storage | None = None,
    urls: bool = False,
    expires: int = 3600,
) -> Iterator[ManifestRow]:
    """Stream the manifest of one of the tenant's jobs (one row per item) or catalogues (one row per current
    entry, retired ones included); another tenant's job or catalogue is missing. `urls` needs `storage`:
    presigned GET links valid `expires` s on S3, file URIs locally."""
    if (job is None) == (catalogue is None):
        raise ManifestError("give exactly one of --job or --catalogue")
    if urls and storage is None:
        raise ManifestError("URLs need the storage (PIXELMILL_STORAGE_URL)")
    locate = (lambda key: storage.locate(key, expires)) if urls and storage is not None else None
    if job is not None:
        if owned_job(session, tenant_id, job) is None:
            raise ManifestError(f"no job {job}; `pixelmill jobs` lists them")
        yield from _stream(session, job_query(job), None, locate)
        return
    yield from _catalogue_rows(session, tenant_id, str(catalogue), locate)


def _stream(session: Session, query: Select[Any], change_column: str | None, locate: Any) -> Iterator[ManifestRow]:
    """Rows of `query` through a server-side cursor (`stream_results`), `_STREAM` at a time."""
    result = session.connection().execute(query.execution_options(stream_results=True, yield_per=_STREAM))
    for row in result:
        yield _row(row, getattr(row, change_column) if change_column else "", locate)


def catalogue_query(tenant_id: int, catalogue: str) -> Select[Any]:
    """One row per entry of the catalogue (retired included), with the item that serves it now."""
    return (
        select(*_columns(), CatalogueEntry.change.label("entry_change"))
        .select_from(CatalogueEntry)
        .join(Item, Item.id == CatalogueEntry.item_id)
        .join(Job, Job.id == Item.job_id)
        .outerjoin(Image, Image.item_id == Item.id)
        .where(CatalogueEntry.tenant_id == tenant_id, CatalogueEntry.catalogue == catalogue)
        .order_by(CatalogueEntry.item_key, CatalogueEntry.variant)
    )


def _catalogue_rows(session: Session, tenant_id: int, catalogue: str, locate: Any) -> Iterator[ManifestRow]:
    if not has_entries(session, tenant_id, catalogue):
        raise ManifestError(unknown_catalogue(session, tenant_id, catalogue))  # with the closest name, if one is close
    yield from _stream(session, catalogue_query(tenant_id, catalogue), "entry_change", locate)


_FINAL_CHANGES = {"failed": "failed", "blocked": "blocked", "cancelled": "cancelled"}


def _timestamp(value: Any) -> str | None:
    """ISO 8601 in UTC from SQLite's stored text or a driver's datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    text = str(value)
    return f"{text[:10]}T{text[11:19]}+00:00"


def _row(r: Any, change: str, locate: Any) -> ManifestRow:
    """One result row of `_columns()` as a ManifestRow: the image's file columns and the scores pass through as
    slices, in the order both declare them."""
    item, job, item_key, variant, state, prompt, seed, error, block_reason, model, key = r[:11]
    file_columns = r[11:16]  # sha256, bytes, width, height, format
    engine, created = r[16], r[17]
    scores = r[18 : 18 + len(SCORES)]
    unchecked, safety_blocked, c2pa, signer, xmp, visibility = r[18 + len(SCORES) : 24 + len(SCORES)]
    photo = r[24 + len(SCORES) : 26 + len(SCORES)]  # input, input_sha256
    state = state or ""
    if change and change != "retired" and state in _FINAL_CHANGES:  # catalogue rows: the serving item ended so
        change = _FINAL_CHANGES[state]
    public = key is not None and visibility == "public"
    if state == "blocked" and block_reason:
        flagged = block_reason.get("flagged") or [f"{block_reason.get('category', '?')}"]
        safety: str | None = f"blocked:{block_reason.get('stage', '?')}:{','.join(map(str, flagged))}"
    elif key is None:
        safety = None
    elif unchecked:
        safety = "unchecked"
    else:
        safety = "blocked:image" if safety_blocked and state != "succeeded" else "ok"
    values = (
        item_key,
        variant,
        change or "",
        state,
        key if public else None,
        locate(key) if public and locate is not None else None,
        *file_columns,
        job,
        item,
        _timestamp(created),
        prompt,
        seed,
        model,
        engine,
        *scores,
        safety,
        (str(signer or "c2pa") if c2pa else "xmp" if xmp else None),
        _last_line(error) if state == "failed" else None,
        *photo,
    )
    return ManifestRow(*values)


def _last_line(error: str | None) -> str | None:
    lines = [line.strip() for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None


# --- writers --------------------------------------------------------------------------------------------


def write_csv(rows: Iterable[ManifestRow], stream: IO[str]) -> int:
    """CSV with a header row; empty cells for missing values. Returns the number of rows."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in astuple(row)])
        count += 1
    return count


def write_jsonl(rows: Iterable[ManifestRow], stream: IO[str]) -> int:
    """One JSON object per line, null for missing values."""
    count = 0
    encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
    write = stream.write
    for row in rows:
        write(encode(dict(zip(COLUMNS, astuple(row)))) + "\n")
        count += 1
    return count


_PARQUET_BATCH = 10_000


def parquet_schema() -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise ManifestError(
            "Parquet needs pyarrow: pip install 'pixelmill[parquet]' (or use --format csv / jsonl)"
        ) from None
    ints = {"variant", "bytes", "width", "height", "job", "item", "seed"}
    return pa.schema(
        [(name, pa.float64() if name in SCORES else pa.int64() if name in ints else pa.string()) for name in COLUMNS]
    )


def write_parquet(rows: Iterable[ManifestRow], stream: IO[bytes]) -> int:
    """Parquet (pyarrow, the `parquet` extra), written in row groups of 10,000 so memory stays flat."""
    schema = parquet_schema()
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            columns: list[Sequence[Any]] = list(zip(*batch)) if batch else [() for _ in COLUMNS]
            writer.write_table(
                pa.Table.from_arrays(
                    [pa.array(col, type=schema.field(i).type) for i, col in enumerate(columns)], schema=schema
                )
            )
            batch.clear()

        for row in rows:
            batch.append(astuple(row))
            count += 1
            if len(batch) >= _PARQUET_BATCH:
                flush()
        if batch or count == 0:
            flush()
    return count


WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}
