"""The store: SQLAlchemy tables, Alembic migrations and repositories; SQLite by default, Postgres by URL.

    store = Store.open(url_or_None, home)
    store.usage.insert_many(records)
    store.traces / datasets / fine_tuning / evals   the learning loop
    with store.transaction() as tx: ...

See `slipway.store.store` for the connection rules and `slipway.store.repositories` for queries.
"""

from slipway.store.repositories import STANDARD_ENVIRONMENTS, generate_secret, hash_key
from slipway.store.repositories.datasets import DATASET_SOURCES, DatasetRow
from slipway.store.repositories.evals import (
    RUN_STATUSES,
    TARGET_KINDS,
    EvalResultRecord,
    EvalResultRow,
    EvalRunRow,
    EvalSuiteRow,
)
from slipway.store.repositories.fine_tuning import (
    FINISHED_STATUSES,
    JOB_STATUSES,
    CheckpointRecord,
    EventRecord,
    FineTuningCheckpointRow,
    FineTuningEventRow,
    FineTuningJobRow,
)
from slipway.store.repositories.keys import KEY_PREFIX
from slipway.store.repositories.traces import TraceFilter, TraceRecord, TraceRow
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
    "TraceFilter", "TraceRecord", "TraceRow", "DATASET_SOURCES", "DatasetRow", "JOB_STATUSES", "FINISHED_STATUSES",
    "CheckpointRecord", "EventRecord", "FineTuningCheckpointRow", "FineTuningEventRow", "FineTuningJobRow",
    "RUN_STATUSES", "TARGET_KINDS", "EvalResultRecord", "EvalResultRow", "EvalRunRow", "EvalSuiteRow",
]
