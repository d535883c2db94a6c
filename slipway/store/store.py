"""The `Store`: one database (SQLite under $SLIPWAY_HOME, or any SQLAlchemy URL) and its repositories.

    store = Store.open(None, home)                 # SQLite in WAL mode at home/slipway.db
    store = Store.open("postgresql+psycopg://postgres@127.0.0.1:5432/slipway", home)
    store.keys.get_by_hash(digest)                 # one call, one transaction
    with store.transaction() as tx:                # several calls, one transaction
        model = tx.models.ensure(workspace_id, "echo", now)
        tx.deployments.create(...)

Opening runs the Alembic migrations to head. Every method is synchronous and safe to call from
any thread; async code calls it through a worker thread. No SQL lives outside this package.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from slipway.errors import SlipwayError
from slipway.store.repositories import (
    DatasetRepository,
    DeploymentRepository,
    EnvironmentRepository,
    EvalRepository,
    FineTuningRepository,
    KeyRepository,
    ModelRepository,
    ReplicaRepository,
    StateRepository,
    TraceRepository,
    UsageRepository,
    WorkspaceRepository,
)

DATABASE_FILE = "slipway.db"
# How long a SQLite writer waits for another writer before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000


class StoreError(SlipwayError):
    """The database could not be opened or migrated."""

    status_code = 503
    code = "store_unavailable"


class Repositories:
    """The repositories over one way of getting a connection (per call, or one shared transaction)."""

    def __init__(self, scope: Callable[[], AbstractContextManager[Connection]]) -> None:
        self.workspaces = WorkspaceRepository(scope)
        self.keys = KeyRepository(scope)
        self.models = ModelRepository(scope)
        self.deployments = DeploymentRepository(scope)
        self.environments = EnvironmentRepository(scope)
        self.replicas = ReplicaRepository(scope)
        self.usage = UsageRepository(scope)
        self.state = StateRepository(scope)
        self.traces = TraceRepository(scope)
        self.datasets = DatasetRepository(scope)
        self.fine_tuning = FineTuningRepository(scope)
        self.evals = EvalRepository(scope)


class Transaction(Repositories):
    """Repositories that all run in one database transaction, committed when the block ends."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(lambda: nullcontext(connection))
        self.connection = connection


class Store(Repositories):
    """The database and its repositories; each repository call on the store is its own transaction."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine.begin)
        self.engine = engine

    @classmethod
    def open(cls, url: str | None, home: Path, *, migrate: bool = True) -> "Store":
        """Open (and by default migrate to head) the database at `url`, or SQLite under `home`."""
        engine = create_store_engine(url, home)
        store = cls(engine)
        if migrate:
            try:
                from slipway.store.migrate import upgrade_to_head

                upgrade_to_head(engine)
            except Exception as exc:
                engine.dispose()
                where = url or str(Path(home) / DATABASE_FILE)
                raise StoreError(
                    f"cannot open the database at {_safe_url(where)}: {exc}; check that it is reachable "
                    "and that SLIPWAY_DATABASE_URL is right"
                ) from exc
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as connection:
            yield Transaction(connection)

    def close(self) -> None:
        self.engine.dispose()


def create_store_engine(url: str | None, home: Path) -> Engine:
    """An engine for `url`, or for SQLite at home/slipway.db; SQLite gets WAL, foreign keys, busy timeout."""
    if url is None:
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{home / DATABASE_FILE}"
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        # One shared connection for an in-memory database, or each thread would see its own.
        extra = {"poolclass": StaticPool} if in_memory else {}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **extra)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=30)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        # writes can fail with "database is locked" at once instead of waiting out busy_timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _safe_url(url: str) -> str:
    """The URL without a password, for error messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url
