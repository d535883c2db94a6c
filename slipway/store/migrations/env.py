"""Alembic environment for slipway's schema.

Run from code (`slipway.store.migrate`), which hands over an open connection in
`config.attributes["connection"]`; run from the alembic command line, it connects to
`sqlalchemy.url` (or SLIPWAY_DATABASE_URL) itself.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from slipway.store.tables import metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SLIPWAY_DATABASE_URL")
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url or SLIPWAY_DATABASE_URL")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
