"""Migrations build the whole schema from an empty database, and it matches the tables module."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from slipway.store import Store
from slipway.store.migrate import current_revision, head_revision, upgrade_to_head
from slipway.store.store import create_store_engine
from slipway.store.tables import metadata

EXPECTED_TABLES = {"workspaces", "api_keys", "models", "deployments", "environments", "environment_history",
                   "replicas", "usage", "state_version", "alembic_version", "traces", "datasets",
                   "fine_tuning_jobs", "fine_tuning_events", "fine_tuning_checkpoints", "eval_suites", "eval_runs",
                   "eval_results"}


def test_empty_database_migrates_to_head_with_every_table(database_url, tmp_path):
    engine = create_store_engine(database_url, tmp_path)
    try:
        assert current_revision(engine) is None
        upgrade_to_head(engine)
        assert current_revision(engine) == head_revision()
        assert set(sa.inspect(engine).get_table_names()) == EXPECTED_TABLES
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_tables_module(database_url, tmp_path):
    engine = create_store_engine(database_url, tmp_path)
    try:
        upgrade_to_head(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_opening_twice_is_a_no_op_and_keeps_data(database_url, tmp_path):
    first = Store.open(database_url, tmp_path / "home")
    first.workspaces.create("kept", 1.0)
    first.close()
    second = Store.open(database_url, tmp_path / "home")
    try:
        assert second.workspaces.get_by_name("kept") is not None
        assert second.state.version() == 0
    finally:
        second.close()


def test_upgrading_a_0001_database_keeps_its_rows_and_adds_the_learning_loop(database_url, tmp_path):
    from alembic import command

    from slipway.store.migrate import alembic_config

    engine = create_store_engine(database_url, tmp_path)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws-1', 'old', 1.0)"))
        upgrade_to_head(engine)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT name FROM workspaces")).scalar() == "old"
        assert {"traces", "fine_tuning_jobs", "eval_results"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrading_a_0002_database_keeps_deployments_without_prices(database_url, tmp_path):
    from alembic import command

    from slipway.store.migrate import alembic_config

    engine = create_store_engine(database_url, tmp_path)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws-1', 'old', 1.0)"))
            connection.execute(sa.text("INSERT INTO models (id, workspace_id, name, created_at) "
                                       "VALUES ('m-1', 'ws-1', 'echo', 1.0)"))
            connection.execute(sa.text(
                "INSERT INTO deployments (id, model_id, number, status, status_detail, spec, package_dir, "
                "package_sha256, desired_replicas, created_at, updated_at) VALUES ('dep-1', 'm-1', 1, 'active', '', "
                "'{}', '/p', 'ab', 1, 1.0, 1.0)"))
        upgrade_to_head(engine)
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT id, pricing FROM deployments")).one()
        assert tuple(row) == ("dep-1", None)
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("usage")}
        assert "ix_usage_deployment_id_status_code_created_at" in indexes
    finally:
        engine.dispose()


def upgrade_with_one_environment(engine, revision: str) -> None:
    """Migrate to `revision`, store one model with a production environment, then migrate to head."""
    from alembic import command

    from slipway.store.migrate import alembic_config

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws-1', 'old', 1.0)"))
        connection.execute(sa.text("INSERT INTO models (id, workspace_id, name, created_at) "
                                   "VALUES ('m-1', 'ws-1', 'echo', 1.0)"))
        connection.execute(sa.text("INSERT INTO environments (model_id, name, created_at, updated_at) "
                                   "VALUES ('m-1', 'production', 1.0, 1.0)"))
    upgrade_to_head(engine)


def test_upgrading_a_0003_database_leaves_every_environment_not_capturing(database_url, tmp_path):
    engine = create_store_engine(database_url, tmp_path)
    try:
        upgrade_with_one_environment(engine, "0003")
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT name, capture FROM environments")).one()
        assert (row[0], bool(row[1])) == ("production", False)
    finally:
        engine.dispose()


def test_upgrading_a_0004_database_leaves_every_environment_without_a_canary(database_url, tmp_path):
    engine = create_store_engine(database_url, tmp_path)
    try:
        upgrade_with_one_environment(engine, "0004")
        with engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT name, capture, canary_deployment_id, canary_percent FROM environments")).one()
        assert (row[0], bool(row[1]), row[2], row[3]) == ("production", False, None, None)
        foreign_keys = {fk["name"]: fk for fk in sa.inspect(engine).get_foreign_keys("environments")}
        canary = foreign_keys["fk_environments_canary_deployment_id_deployments"]
        assert (canary["constrained_columns"], canary["referred_table"]) == (["canary_deployment_id"], "deployments")
    finally:
        engine.dispose()
