"""Alembic environment: the engine comes from the caller or from PIXELMILL_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from contract.schema import Base

config = context.config
target_metadata = Base.metadata


def _engine():
    engine = config.attributes.get("connection_engine")
    if engine is None:
        from contract.ledger import make_engine
        from contract.settings import get_settings

        engine = make_engine(get_settings())
    return engine


def run_migrations_offline() -> None:
    from contract.settings import get_settings

    context.configure(
        url=get_settings().resolved_database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename: with foreign keys on, the drop would cascade
            # into every row that refers to it. The pragma only takes effect outside a transaction, hence the
            # DB-API connection before SQLAlchemy begins one; the check afterwards proves nothing dangles.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if sqlite:
            raw = connection.connection.dbapi_connection
            dangling = raw.execute("PRAGMA foreign_key_check").fetchall()
            raw.execute("PRAGMA foreign_keys=ON")
            if dangling:
                raise RuntimeError(f"migration left rows that refer to nothing: {dangling[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
