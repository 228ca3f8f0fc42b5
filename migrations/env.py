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
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=connection.dialect.name == "sqlite"
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
