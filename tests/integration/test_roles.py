"""Least privilege on PostgreSQL: each component runs under a login role in its group, as
`postsave grants` makes them, and each group is refused what it must not do. The database is
owned by a plain login role that ran the migrations (tests/roles.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from domain import operations, projection, retention, use_cases
from domain.delivery import handle_delivery
from domain.outbox import RelayLimits
from domain.relay import relay_once
from infrastructure.bootstrap import Container
from infrastructure.cli.main import main
from infrastructure.memory import InMemoryDispatcher
from infrastructure.ops import metrics
from infrastructure.settings import Settings
from infrastructure.sql.grants import missing_grants, roles_in_use
from infrastructure.sql.schema import metadata
from tests.roles import RoleUrls, apply_grants, role_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def roles() -> Iterator[RoleUrls]:
    with role_database() as urls:
        yield urls


def container(url: str) -> Container:
    return Container(Settings(database_url=url, nudge=False))


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("POSTSAVE_DATABASE_URL", url)
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_component_works_under_its_own_role(
    roles: RoleUrls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_every_component(roles, monkeypatch, capsys)
    monitor = container(roles.monitor)
    try:
        with monitor.engine.connect() as connection:
            assert roles_in_use(connection)
            assert missing_grants(connection) == []
    finally:
        monitor.close()


def run_every_component(
    roles: RoleUrls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What each component does, under its role: every statement of each kind."""
    app, worker, monitor = container(roles.app), container(roles.worker), container(roles.monitor)
    try:
        # The application: foos and their events, bars.
        use_cases.create_bars(app.uow(), 3, count=5)
        foo_ids = use_cases.create_foos(app.uow(), 10, count=6)
        use_cases.revise_foo(app.uow(), foo_ids[0], 20)
        use_cases.complete_foos(app.uow(), foo_ids[:4])
        use_cases.revise_foo(app.uow(), foo_ids[1], 7)
        use_cases.cancel_foos(app.uow(), foo_ids[2:3])
        use_cases.create_bars(app.uow(), 2)

        # The worker: relay, deliveries, retention, and the operator's writing commands.
        dispatcher = InMemoryDispatcher()
        relay_once(worker.uow(), dispatcher, RelayLimits())
        for event_id in list(dispatcher.dispatched):
            handle_delivery(worker.uow, event_id, worker.heavy_step)
        relay_once(worker.uow(), dispatcher, RelayLimits())
        assert operations.outbox_stats(worker.uow()).drained
        projection.rebuild(worker.uow, worker.heavy_step)
        assert retention.prune(worker.uow, 0.0).pruned > 0

        # The monitor: it reads.
        for argv in (["status"], ["dead", "list"], ["status", "--json"]):
            code, out, err = run_cli(monkeypatch, capsys, roles.monitor, *argv)
            assert (code, err) == (0, ""), (argv, out, err)
        code, out, _ = run_cli(monkeypatch, capsys, roles.monitor, "check", "--timeout", "2")
        assert out.startswith("database: ok, ") and "\nrelay: ok, " in out, out
        scraped = {m.name: m.samples for m in metrics.OutboxCollector(monitor.uow).collect()}
        assert scraped["postsave_database_up"][0].value == 1
        # The operator's commands that lock parts or write, as the worker's role (verify
        # locks each part while it compares, so that no pass changes it meanwhile).
        for argv in (["verify"], ["rebuild"], ["prune", "--older-than", "0s"], ["dead", "retry"]):
            code, out, err = run_cli(monkeypatch, capsys, roles.worker, *argv)
            assert code == 0, (argv, out, err)
    finally:
        for each in (app, worker, monitor):
            each.close()


def refused(url: str, statement: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    except ProgrammingError as error:
        return "permission denied" in str(error) or "must be owner" in str(error)
    finally:
        engine.dispose()
    return False


def test_each_role_is_refused_what_it_must_not_do(roles: RoleUrls) -> None:
    app = container(roles.app)
    try:
        use_cases.create_bars(app.uow(), 1)
    finally:
        app.close()
    tables = sorted(metadata.tables)
    forbidden = {
        roles.app: [
            "UPDATE bars SET value = 0",
            "DELETE FROM outbox_events",
            "UPDATE outbox_events SET state = 'processed'",
            "SELECT payload FROM outbox_events",
            "DELETE FROM foos",
            "UPDATE bar_projection SET head_position = 0",
        ],
        roles.monitor: [
            *(f"DELETE FROM {table}" for table in tables),
            "UPDATE outbox_events SET state = 'dead'",
            "INSERT INTO foos (amount, state, version) VALUES (1, 'pending', 1)",
            "UPDATE bars SET value = 0",
            "SELECT * FROM foos",
            "SELECT * FROM bars",
        ],
        roles.worker: ["DELETE FROM foos", "DELETE FROM bars", "UPDATE foos SET amount = 0"],
    }
    for url in (roles.app, roles.worker, roles.monitor):
        forbidden[url] += [
            "CREATE TABLE sneaky (id int)",
            "ALTER TABLE bars ADD COLUMN sneaky int",
            "DROP TABLE outbox_events",
            "TRUNCATE outbox_events",
            "CREATE INDEX sneaky ON bars (id)",
            "DELETE FROM postsave_alembic_version",
        ]
    allowed = [
        (url, statement)
        for url, statements in forbidden.items()
        for statement in statements
        if not refused(url, statement)
    ]
    assert allowed == []


def privileges(url: str) -> list[tuple[str, str]]:
    """Every table's and column's access list in the database, as PostgreSQL keeps them."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text(
                "SELECT c.relname || coalesce('.' || a.attname, ''),"
                " coalesce(a.attacl, c.relacl)::text FROM pg_class c"
                " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL"
                " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')"
                " ORDER BY 1, 2"
            )
            return [(row[0], row[1]) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_grants_are_idempotent_and_exact(roles: RoleUrls) -> None:
    """Applied again, nothing changes; applied over privileges it does not grant (an
    earlier version's, or a hand-made one), it takes them back."""
    granted = privileges(roles.superuser)
    apply_grants(roles)
    assert privileges(roles.superuser) == granted

    admin_url = roles.superuser
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("GRANT UPDATE ON bars TO postsave_app"))
        connection.execute(text("GRANT SELECT (payload) ON outbox_events TO postsave_app"))
        connection.execute(text("GRANT DELETE ON foos TO postsave_worker"))
        connection.execute(text("GRANT USAGE ON SEQUENCE foos_id_seq TO postsave_monitor"))
    engine.dispose()
    assert privileges(roles.superuser) != granted
    apply_grants(roles)
    assert privileges(roles.superuser) == granted


def test_check_says_when_the_grants_lag_behind_the_schema(
    roles: RoleUrls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a migration that adds a table or a column, the grants must follow: what a role
    lacks is named, as the monitor's role sees it."""
    worker = container(roles.worker)
    try:
        relay_once(worker.uow(), InMemoryDispatcher(), RelayLimits())  # the relay is recent
    finally:
        worker.close()

    def check_lines() -> list[str]:
        _, out, err = run_cli(monkeypatch, capsys, roles.monitor, "check", "--timeout", "2")
        return [line for line in (out + err).splitlines() if line.startswith("grants:")]

    assert check_lines() == [
        "grants: ok, postsave_app, postsave_worker, postsave_monitor hold what this revision needs"
    ]
    engine = create_engine(roles.superuser, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("REVOKE UPDATE ON bars FROM postsave_worker"))
        connection.execute(text("REVOKE SELECT (id) ON outbox_events FROM postsave_app"))
    engine.dispose()
    assert check_lines() == [
        "grants: 2 missing (postsave_app: SELECT (id) on outbox_events; postsave_worker: UPDATE "
        "on bars); apply `postsave grants` with psql as the schema's owner"
    ]
    apply_grants(roles)
    assert check_lines()[0].startswith("grants: ok, ")


def test_without_the_group_roles_nothing_is_said_of_grants(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deployment that connects as one role: its check has no grants line."""
    with role_database(grant=False) as roles:
        _, out, err = run_cli(monkeypatch, capsys, roles.owner, "check", "--timeout", "2")
    assert out.startswith("database: ok, ")
    assert "grants" not in out + err
