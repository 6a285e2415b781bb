"""postsave inside the application's own transaction: its row, the foo and the outbox event
commit or roll back together, and postsave neither commits nor closes what it does not own.
The application's engine uses either PostgreSQL driver: psycopg 3, or psycopg2 (SQLAlchemy's
default for `postgresql://`); postsave's own uses psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session

from domain import use_cases
from domain.errors import InvalidTransitionError
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.unit_of_work import SqlUnitOfWork

pytestmark = pytest.mark.postgres


@pytest.fixture
def container(pg_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url))
    with built.engine.begin() as connection:
        connection.execute(text("CREATE TABLE app_orders (id integer PRIMARY KEY, foo_id bigint)"))
    yield built
    built.close()


@pytest.fixture(params=["psycopg", "psycopg2"])
def application(request: pytest.FixtureRequest, pg_url: str) -> Iterator[Engine]:
    """The application's own engine, through the driver it chose."""
    assert pg_url.startswith("postgresql+psycopg://")
    engine = create_engine(pg_url.replace("+psycopg:", f"+{request.param}:", 1))
    assert engine.dialect.driver == request.param
    yield engine
    engine.dispose()


@pytest.fixture
def foo_id(container: Container) -> int:
    return use_cases.create_foos(container.uow(), amount=7)[0]


def place_order(connection: Connection | Session, foo_id: int) -> None:
    connection.execute(text("INSERT INTO app_orders VALUES (1, :foo)"), {"foo": foo_id})


def world(container: Container) -> tuple[list[tuple[object, ...]], str, int]:
    """The application's orders, the foo's state and the outbox's events, as committed."""
    with container.engine.connect() as connection:
        orders = [tuple(row) for row in connection.execute(text("SELECT * FROM app_orders"))]
        state = connection.execute(text("SELECT state FROM foos")).scalar_one()
        events = connection.execute(text("SELECT count(*) FROM outbox_events")).scalar_one()
        return orders, state, events


def test_the_applications_row_the_foo_and_its_event_commit_together(
    container: Container, application: Engine, foo_id: int
) -> None:
    with application.connect() as connection:
        place_order(connection, foo_id)
        use_cases.complete_foo(container.uow(connection), foo_id)
        assert connection.in_transaction() and not connection.closed  # still the caller's
        assert world(container) == ([], "pending", 0)  # nothing is committed by postsave
        connection.commit()

    assert world(container) == ([(1, foo_id)], "completed", 1)


def test_the_applications_rollback_takes_the_foo_and_its_event_with_it(
    container: Container, application: Engine, foo_id: int
) -> None:
    with pytest.raises(RuntimeError, match="payment declined"), application.begin() as conn:
        place_order(conn, foo_id)
        use_cases.complete_foo(container.uow(conn), foo_id)
        raise RuntimeError("payment declined")

    assert world(container) == ([], "pending", 0)


def test_an_application_session_works_the_same_way(
    container: Container, application: Engine, foo_id: int
) -> None:
    with Session(application) as session:
        place_order(session, foo_id)
        use_cases.complete_foo(container.uow(session), foo_id)
        session.commit()
    assert world(container) == ([(1, foo_id)], "completed", 1)

    with Session(application) as session:
        session.execute(text("DELETE FROM app_orders"))
        use_cases.cancel_foo(container.uow(session), foo_id)
        session.rollback()
    assert world(container) == ([(1, foo_id)], "completed", 1)


def test_a_refused_change_undoes_only_postsaves_part_of_the_transaction(
    container: Container, application: Engine, foo_id: int
) -> None:
    use_cases.complete_foo(container.uow(), foo_id)
    with application.begin() as connection:
        place_order(connection, foo_id)
        with pytest.raises(InvalidTransitionError):
            use_cases.complete_foo(container.uow(connection), foo_id)
        # The application decides: here it keeps its own row.

    assert world(container) == ([(1, foo_id)], "completed", 1)


def test_the_relay_is_nudged_when_the_applications_transaction_commits_not_before(
    application: Engine, foo_id: int
) -> None:
    nudges: list[str] = []
    with application.connect() as connection:
        uow = SqlUnitOfWork.joining(connection, lambda: nudges.append("nudge"))
        use_cases.complete_foo(uow, foo_id)
        assert nudges == []
        connection.commit()
        assert nudges == ["nudge"]


def test_a_unit_of_work_of_its_own_on_the_applications_engine_leaves_no_autocommit_behind(
    container: Container, application: Engine, foo_id: int
) -> None:
    use_cases.complete_foo(SqlUnitOfWork(application), foo_id)  # read and saved in autocommit

    with application.connect() as connection:  # the same pooled connection
        driver = connection.connection.driver_connection
        assert driver is not None and driver.autocommit is False  # as the pool lent it
        place_order(connection, foo_id)
        connection.rollback()
    assert world(container) == ([], "completed", 1)
