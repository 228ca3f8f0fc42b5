"""Engines and sessions for the ledger, on SQLite (embedded) and PostgreSQL alike.

SQLite runs in WAL mode with a busy timeout, and every writing transaction starts with BEGIN IMMEDIATE: it
takes the lock up front instead of failing half-way with "database is locked" when two processes
(producer, worker, reconciler) write at once. Read-only sessions use a plain BEGIN, so `status --watch`
never queues behind the workers for a lock it does not need.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from pixelmill.schema import Base
from pixelmill.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_READONLY = "pixelmill_readonly"


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        if settings.database_url is None:
            settings.data_path.mkdir(parents=True, exist_ok=True)
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
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READONLY) else "BEGIN IMMEDIATE")


class Ledger:
    """One engine and session factory per process; workers rebuild it after fork."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.readers = sessionmaker(self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False)
        if migrate:
            ensure_schema(self.engine, settings)

    @contextlib.contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with (self.readers if readonly else self.sessions).begin() as session:
            yield session

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


def schema_is_current(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads


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


def insert_ignore(session: Session, table: type[Base], rows: Sequence[dict[str, Any]], conflict: Sequence[str]) -> int:
    """INSERT … ON CONFLICT DO NOTHING: the idempotent write every finish and resubmission relies on."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
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
    from pixelmill.schema import Meta, utcnow

    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value, updated=utcnow()))
    elif row.value != value:
        row.value, row.updated = value, utcnow()
