"""The schema: every table slipway keeps, as SQLAlchemy Core tables.

Times are Unix seconds (float) so they compare and sort the same on SQLite and Postgres, and
so decision code can be handed `now` as a number. JSON columns hold small lists and the parsed
package spec. The migrations in `slipway/store/migrations` create exactly this schema; a test
compares the two.

    workspaces ─┬─ api_keys
                └─ models ─┬─ deployments ── replicas
                           └─ environments ── environment_history
    usage          (one row per request; by workspace and time)
    state_version  (one row: bumped on every change the gateway must see)

The learning loop (0002):

    traces         (captured request/response pairs and their feedback; by workspace and time)
    workspaces ─┬─ datasets
                ├─ fine_tuning_jobs ─┬─ fine_tuning_events
                │                    └─ fine_tuning_checkpoints
                └─ eval_suites ── eval_runs ── eval_results

Prices and errors (0003): `deployments.pricing`, the prices the usage API turns into cost, and
an index for a deployment's recent failed requests in `usage`.

Environment capture (0004): `environments.capture`, traces stored for all of an environment's
traffic whatever its deployment's package says.

Canaries (0005): `environments.canary_deployment_id` and `environments.canary_percent`, a second
deployment of the model that gets that percent of the environment's requests before it is
promoted fully.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

# Explicit constraint names keep migrations identical on SQLite and Postgres.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

workspaces = Table(
    "workspaces", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False, default=""),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("models", JSON, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

models = Table(
    "models", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("workspace_id", "name"),
)

deployments = Table(
    "deployments", metadata,
    Column("id", String(40), primary_key=True),
    Column("model_id", String(40), ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_detail", Text, nullable=False, default=""),
    Column("spec", JSON, nullable=False),
    Column("package_dir", Text, nullable=False),
    Column("package_sha256", String(64), nullable=False),
    Column("desired_replicas", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # What the deployment's usage costs ({"per_request": 0.001, ...}); set by the operator through the
    # API, not by the package, so it lives beside the spec rather than in it. Null: no prices.
    Column("pricing", JSON, nullable=True),
    UniqueConstraint("model_id", "number"),
    Index(None, "status"),
)

environments = Table(
    "environments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", String(40), ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    # The deployment serving this environment now.
    Column("deployment_id", String(40), ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True),
    # A deployment promoted here that takes over once it has a ready replica.
    Column("pending_deployment_id", String(40), ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Whether the gateway stores request/response traces of this environment's traffic (0004).
    Column("capture", Boolean, nullable=False, default=False, server_default=false()),
    # A deployment getting `canary_percent` (1-99) percent of the environment's requests (0005).
    Column("canary_deployment_id", String(40), ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True),
    Column("canary_percent", Integer, nullable=True),
    UniqueConstraint("model_id", "name"),
)

environment_history = Table(
    "environment_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment_id", Integer, ForeignKey("environments.id", ondelete="CASCADE"), nullable=False),
    Column("deployment_id", String(40), ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False),
    Column("promoted_at", Float, nullable=False),
    Index(None, "environment_id", "promoted_at"),
)

replicas = Table(
    "replicas", metadata,
    Column("id", String(64), primary_key=True),
    Column("deployment_id", String(40), ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("url", Text, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("restarts", Integer, nullable=False, default=0),
    Column("exit_code", Integer, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

usage = Table(
    "usage", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("workspace_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("model_name", String(100), nullable=False),
    Column("deployment_id", String(40), nullable=True),
    Column("environment", String(100), nullable=True),
    Column("route", String(32), nullable=False),
    Column("input_units", BigInteger, nullable=False),
    Column("output_units", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    # UTC day number (Unix seconds // 86400), so grouping by day is the same plain GROUP BY on
    # every database instead of each one's own date functions.
    Column("day", Integer, nullable=False),
    Index(None, "workspace_id", "created_at"),
    # A deployment's recent errors (status >= 500) without reading its successful requests (0003).
    Index(None, "deployment_id", "status_code", "created_at"),
)

state_version = Table(
    "state_version", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)


# ---- the learning loop ---------------------------------------------------------------------------

# Like usage, traces carry the workspace id without a foreign key: they arrive in bulk from the
# gateway and must land even while the workspace is being changed elsewhere.
traces = Table(
    "traces", metadata,
    Column("id", String(100), primary_key=True),
    Column("workspace_id", String(40), nullable=False),
    Column("model", String(100), nullable=False),
    Column("environment", String(100), nullable=True),
    Column("deployment_id", String(40), nullable=True),
    Column("request", JSON, nullable=False),
    Column("response", JSON, nullable=True),
    Column("status_code", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("tags", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("feedback_score", Float, nullable=True),
    Column("feedback_label", String(100), nullable=True),
    Column("corrected_output", Text, nullable=True),
    Column("feedback_at", Float, nullable=True),
    Index(None, "workspace_id", "created_at"),
)

datasets = Table(
    "datasets", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", String(16), nullable=False),
    Column("filters", JSON, nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("train_rows", Integer, nullable=False),
    Column("validation_rows", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "workspace_id", "created_at"),
)

fine_tuning_jobs = Table(
    "fine_tuning_jobs", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("training_file", String(40), nullable=False),
    Column("validation_file", String(40), nullable=True),
    Column("hyperparameters", JSON, nullable=False),
    Column("suffix", String(64), nullable=True),
    Column("status", String(24), nullable=False),
    Column("fine_tuned_model", String(200), nullable=True),
    Column("error", JSON, nullable=True),
    Column("trained_tokens", BigInteger, nullable=True),
    Column("seed", Integer, nullable=False),
    Column("job_dir", Text, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Index(None, "workspace_id", "created_at"),
    Index(None, "status"),
)

fine_tuning_events = Table(
    "fine_tuning_events", metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), nullable=False),
    # The event's position in the job's events.jsonl: re-reading the file inserts nothing twice.
    Column("seq", Integer, nullable=False),
    Column("level", String(8), nullable=False),
    Column("type", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON, nullable=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("job_id", "seq"),
)

fine_tuning_checkpoints = Table(
    "fine_tuning_checkpoints", metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("job_id", "step"),
)

eval_suites = Table(
    "eval_suites", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("items_path", Text, nullable=False),
    Column("items_hash", String(64), nullable=False),
    Column("num_items", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("workspace_id", "name"),
)

eval_runs = Table(
    "eval_runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("workspace_id", String(40), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("suite_id", String(40), ForeignKey("eval_suites.id", ondelete="CASCADE"), nullable=False),
    Column("target_kind", String(16), nullable=False),
    Column("target", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("summary", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("job_dir", Text, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Index(None, "workspace_id", "created_at"),
    Index(None, "suite_id"),
)

eval_results = Table(
    "eval_results", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("sample", JSON, nullable=False),
    Column("score", Float, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("rationale", Text, nullable=False),
    UniqueConstraint("run_id", "item_index"),
)
