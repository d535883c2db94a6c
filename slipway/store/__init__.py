"""The store: SQLAlchemy tables, Alembic migrations and repositories; SQLite by default, Postgres by URL.

    store = Store.open(url_or_None, home)
    store.usage.insert_many(records)
    with store.transaction() as tx: ...

See `slipway.store.store` for the connection rules and `slipway.store.repositories` for queries.
"""

from slipway.store.repositories import STANDARD_ENVIRONMENTS, generate_secret, hash_key
from slipway.store.repositories.keys import KEY_PREFIX
from slipway.store.repositories.usage import GROUPS as USAGE_GROUPS
from slipway.store.rows import (
    DEPLOYMENT_STATUSES,
    RUNNING_STATUSES,
    DeploymentRow,
    EnvironmentRow,
    HistoryRow,
    KeyRow,
    ModelRow,
    ReplicaRow,
    UsageTotals,
    WorkspaceRow,
)
from slipway.store.store import DATABASE_FILE, Store, StoreError, Transaction

__all__ = [
    "Store", "StoreError", "Transaction", "DATABASE_FILE", "KEY_PREFIX", "STANDARD_ENVIRONMENTS", "USAGE_GROUPS",
    "generate_secret", "hash_key", "DEPLOYMENT_STATUSES", "RUNNING_STATUSES", "DeploymentRow", "EnvironmentRow",
    "HistoryRow", "KeyRow", "ModelRow", "ReplicaRow", "UsageTotals", "WorkspaceRow",
]
