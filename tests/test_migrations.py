import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cancel_flow.models import SQLModel
from cancel_flow.store import make_engine, migrate


def test_migrations_build_exactly_the_models(database_url):
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


def test_migrating_twice_changes_nothing(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    assert {"cancel_session", "stripe_event", "alembic_version"} <= tables
    engine.dispose()


def test_migrate_command_builds_a_new_database(tmp_path, monkeypatch):
    from cancel_flow.cli import main

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    try:
        main(["migrate"])
    except SystemExit as done:
        assert done.code == 0
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
