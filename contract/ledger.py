"""Engines and sessions for the ledger, on SQLite (embedded) and PostgreSQL alike.

SQLite runs in WAL mode with a busy timeout, and every writing transaction starts with BEGIN IMMEDIATE: it
takes the lock up front instead of failing half-way with "database is locked" when two processes
(producer, worker, reconciler) write at once. Read-only sessions use a plain BEGIN, so `status --watch`
never queues behind the workers for a lock it does not need.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from contract.host_files import private_data_dir, private_file
from contract.schema import Base
from contract.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_READONLY = "pixelmill_readonly"
HEAD = "0016"  # the newest migration's revision: a new migration changes it (tests/test_contract.py checks)


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        if settings.database_url is None:
            private_data_dir(settings.data_path)
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            # Prompts, webhook URLs and tenants' token digests: this user's only (SQLite gives -wal/-shm the same).
            private_file(Path(database), what="the ledger", remedy="set PIXELMILL_DATABASE_URL to a file of your own")
        engine = create_engine(url, connect_args={"timeout": settings.sqlite_busy_timeout})
        _configure_sqlite(engine, settings.sqlite_busy_timeout)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" hook below emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        # 64 MiB of page cache (default 2 MiB): a 100k-row submit inserts into random places of the content-hash
        # index; with the small cache SQLite spilled and re-read pages ~650k times (1.5 s of system time).
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_READONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            if conn.info.pop(_DEFERRED, False):  # `defer_checkpoint` lasts one commit
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")


_AUTOCHECKPOINT = 1000  # pages: SQLite's default
_DEFERRED = "pixelmill_checkpoint_deferred"  # in the DB-API connection's info: reset at its next write BEGIN


def defer_checkpoint(session: Session) -> None:
    """This transaction's commit leaves the WAL as it is, for the next writer's commit to check-point: a
    100k-row submit's commit would otherwise copy some 50 MB into the database before it may publish. No-op
    except on SQLite; the next transaction on the connection check-points as usual again."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        conn.info[_DEFERRED] = True


class Ledger:
    """One engine and session factory per process; workers rebuild it after fork."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.readers = sessionmaker(self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False)
        self.autocommit = (
            sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
            if self.engine.dialect.name == "postgresql"
            else None
        )
        if migrate:
            ensure_schema(self.engine, settings)

    @contextlib.contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with (self.readers if readonly else self.sessions).begin() as session:
            yield session

    @contextlib.contextmanager
    def statements(self) -> Iterator[Session]:
        """Statements that need no transaction around them (reads that are each consistent on their own, writes of
        one statement): on PostgreSQL each commits by itself, which spares a BEGIN and a COMMIT round trip (the
        scheduler's pass); on SQLite a read-only transaction (`statements_commit` says which)."""
        with (self.autocommit or self.readers).begin() as session:
            yield session

    @property
    def statements_commit(self) -> bool:
        """Whether a write in `statements()` commits by itself (PostgreSQL), rather than being refused."""
        return self.autocommit is not None

    def dispose_after_fork(self) -> None:
        # Connections inherited from the parent belong to the parent; never use them in the child.
        self.engine.dispose(close=False)

    def close(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["connection_engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def migration_heads() -> set[str]:
    """The head revisions of migrations/, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def schema_is_current(engine: Engine) -> bool:
    """The database is at HEAD (read from `alembic_version` directly: importing Alembic and parsing every
    migration costs a short command about 0.15 s; tests check HEAD against `migration_heads()`)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    return current == {HEAD}


def ensure_schema(engine: Engine, settings: Settings) -> None:
    """Migrate the embedded SQLite ledger on first use; a server database must be migrated on purpose."""
    if schema_is_current(engine):
        return
    if engine.dialect.name != "sqlite":
        raise RuntimeError(
            "the database at PIXELMILL_DATABASE_URL is not at the current schema; run `pixelmill db upgrade`"
        )
    lock_path = settings.data_path / ".migrate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes may start on a fresh data dir at once
        if not schema_is_current(engine):
            log.info("migrating ledger", extra={"url": engine.url.render_as_string(hide_password=True)})
            upgrade(engine)


def bound(session: Session, column: Column[Any], value: Any) -> Any:
    """`value` as the driver takes it for `column` (SQLAlchemy's own bind processing, applied once: for values
    a bulk insert repeats on every row, like a timestamp or shared parameters)."""
    processor = column.type.bind_processor(session.get_bind().dialect)
    return processor(value) if processor is not None else value


def listed(session: Session, values: Sequence[Any], element: type[String] | type[BigInteger]) -> Any:
    """`values` as a one-column table (column `value`) bound as ONE parameter whatever their number, so a
    statement using it compiles once: `unnest` of an array on PostgreSQL, `json_each` of a JSON array on SQLite
    (expanding 2,000 parameters cost as much as the lookup itself)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.unnest(_array(values, element)).table_valued("value").render_derived()
    return func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")


def one_of(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values` with one parameter (`listed`). On PostgreSQL `= ANY(array)`: an IN list of 2,000
    parameters inside a bulk-inserting transaction, with no statistics for its own fresh rows yet, was planned
    as a scan of the whole table (1.6 s a batch at 100k rows)."""
    if session.get_bind().dialect.name == "postgresql":
        element = String if isinstance(column.type, String) else BigInteger
        return cast(ColumnElement[bool], column == any_(_array(values, element)))
    return cast(ColumnElement[bool], column.in_(select(listed(session, values, String).c.value)))


def _array(values: Sequence[Any], element: type[String] | type[BigInteger]) -> Any:
    """One PostgreSQL array parameter."""
    return bindparam(None, list(values), type_=_array_type(element))


def ids_param(name: str) -> Any:
    """A named PostgreSQL `bigint[]` parameter (`column = ANY(:name)`) for a statement built once."""
    return bindparam(name, type_=_array_type(BigInteger))


_ARRAY_TYPES: dict[str, Any] = {}


def _array_type(element: type[String] | type[BigInteger]) -> Any:
    """One type object per element type: a new one for every statement cost about 0.2 ms of SQLAlchemy's cache-key
    work per execution (the scheduler's pass runs several)."""
    if element.__name__ not in _ARRAY_TYPES:
        from sqlalchemy.dialects.postgresql import ARRAY  # here: the dialect costs every command 30 ms to import

        _ARRAY_TYPES[element.__name__] = ARRAY(element)
    return _ARRAY_TYPES[element.__name__]


# Bound parameters one SQLite statement may take (SQLITE_MAX_VARIABLE_NUMBER: 32766 since 3.32, 999 before).
_SQLITE_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def bulk_insert(session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Rows of driver-ready values (`bound`) in the session's transaction: COPY on PostgreSQL, multi-row INSERT
    statements on SQLite. The submit's path for 100k-row batches, where SQLAlchemy's per-row parameter
    processing cost more than the database's own insert. On SQLite one statement runs many rows in one step,
    which lets go of the GIL once: an executemany gives it up and takes it back for every row, which stalls
    (by the interpreter's switch interval) when another thread of the process is busy."""
    conn = session.connection()
    names = ", ".join(conn.dialect.identifier_preparer.quote(name) for name in columns)
    target = conn.dialect.identifier_preparer.format_table(table)
    if conn.dialect.name == "postgresql":
        # COPY takes JSON columns as text; psycopg's bound values for them are Python objects (shared ones are
        # serialised once).
        json_at = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
        text_of: dict[int, tuple[Any, str]] = {}  # id → (the object, kept alive so its id stays its own; text)
        raw: Any = conn.connection.dbapi_connection  # a psycopg Connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for row in rows:
                if json_at:
                    row = list(row)
                    for i in json_at:
                        value = row[i]
                        if value is not None and not isinstance(value, str):
                            known = text_of.get(id(value))
                            if known is None:
                                known = text_of[id(value)] = (value, json.dumps(value))
                            row[i] = known[1]
                copy.write_row(row)
    elif conn.dialect.name == "sqlite":
        one = "(" + ", ".join("?" for _ in columns) + ")"
        per_statement = max(1, _SQLITE_VARIABLES // len(columns))
        pending = list(rows)
        for start in range(0, len(pending), per_statement):
            chunk = pending[start : start + per_statement]
            conn.exec_driver_sql(
                f"INSERT INTO {target} ({names}) VALUES {', '.join([one] * len(chunk))}",
                tuple(value for row in chunk for value in row),
            )
    else:
        raise NotImplementedError(f"no bulk insert for the {conn.dialect.name} dialect")


def insert_ignore(session: Session, table: type[Base], rows: Sequence[dict[str, Any]], conflict: Sequence[str]) -> int:
    """INSERT … ON CONFLICT DO NOTHING: the idempotent write every finish and resubmission relies on."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    from sqlalchemy.dialects import postgresql, sqlite

    stmt: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    elif dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    else:
        raise NotImplementedError(f"no idempotent insert for the {dialect} dialect")
    result = session.execute(stmt, list(rows))
    return int(getattr(result, "rowcount", 0) or 0)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def record_meta(session: Session, key: str, value: str) -> None:
    """Set one installation fact in `meta` (e.g. `data_dir`: where this ledger's data directory is)."""
    from contract.schema import Meta, utcnow

    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value, updated=utcnow()))
    elif row.value != value:
        row.value, row.updated = value, utcnow()
