"""A fresh store per test on each database: SQLite in a temp folder, and Postgres in its own schema.

The Postgres case gets a schema of its own (dropped afterwards), so tests running in parallel,
or by several people against one server, never see each other's rows. It is skipped, with the
reason, when no server answers.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from slipway.store import Store

POSTGRES_URL = os.environ.get("SLIPWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_unreachable() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no server to test against
        return f"Postgres at {POSTGRES_URL} does not answer ({type(exc).__name__}); set SLIPWAY_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_skip_reason() -> str | None:
    return _postgres_unreachable()


@pytest.fixture
def postgres_schema_url(postgres_skip_reason):
    """A URL whose search_path is a brand-new, empty schema; the schema is dropped afterwards."""
    if postgres_skip_reason:
        pytest.skip(postgres_skip_reason)
    schema = f"slipway_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """None (SQLite under tmp_path) or a Postgres URL with a fresh schema."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def store(database_url, tmp_path):
    opened = Store.open(database_url, tmp_path / "home")
    yield opened
    opened.close()
