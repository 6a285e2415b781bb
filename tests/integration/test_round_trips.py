"""What a save sends to PostgreSQL, read from libpq's own trace of the connection: a foo's
change alone is two round trips (its read, then its version-checked save with its event), with
no BEGIN or COMMIT; anything more runs in one transaction, all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from domain import use_cases
from domain.bar import Bar
from domain.delivery import Outcome, handle_delivery
from domain.errors import ConcurrentUpdateError
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.engines import make_engine
from infrastructure.sql.unit_of_work import SqlUnitOfWork
from tests.deliveries import dispatch

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@contextmanager
def traced(engine: Engine, path: Path) -> Iterator[list[str]]:
    """The messages this process sent on the pool's one connection meanwhile, in order: a
    statement as its text (simple query, or the Parse of an extended one), and `Sync` where an
    extended one ends. Each Sync and each simple query is one round trip."""
    with engine.connect() as connection:  # the pool's connection, opened before tracing
        connection.execute(text("SELECT 1"))
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    sent: list[str] = []
    with path.open("w") as out:
        with engine.connect() as connection:
            pgconn = connection.connection.driver_connection.pgconn  # type: ignore[union-attr]
            pgconn.trace(out.fileno())
        try:
            yield sent
        finally:
            pgconn.untrace()  # flushes the trace, before the file closes
    sent.extend(_messages(path))


def _messages(path: Path) -> list[str]:
    messages = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 4 or fields[1] != "F":
            continue  # the server's answers, or the rest of a statement's text
        kind = fields[3]
        if kind in ("Query", "Parse"):  # `"BEGIN"`, or `"" "SELECT ...` (unnamed statement)
            messages.append(
                fields[4].strip().strip('" ') if kind == "Query" else fields[4].lstrip('" ')
            )
        elif kind == "Sync":
            messages.append("Sync")
    return messages


def round_trips(sent: list[str]) -> int:
    parses = sum(not m.startswith(("BEGIN", "COMMIT", "ROLLBACK", "Sync")) for m in sent)
    simple = sum(m.startswith(("BEGIN", "COMMIT", "ROLLBACK")) for m in sent)
    syncs = sent.count("Sync")
    assert parses == syncs  # one statement per extended exchange
    return syncs + simple


def test_completing_a_foo_is_two_round_trips_and_no_transaction(
    engine: Engine, tmp_path: Path
) -> None:
    (foo_id,) = use_cases.create_foos(SqlUnitOfWork(engine), 5)

    with traced(engine, tmp_path / "trace") as sent:
        use_cases.complete_foo(SqlUnitOfWork(engine), foo_id)

    assert round_trips(sent) == 2
    statements = [m for m in sent if m != "Sync"]
    assert statements[0].startswith("SELECT")
    assert statements[1].startswith("WITH saved AS")  # the foo and its event, one statement
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox_events")).scalar() == 1
        state = connection.execute(text("SELECT state FROM foos WHERE id = :i"), {"i": foo_id})
        assert state.scalar() == "completed"


def test_revising_or_cancelling_a_pending_foo_is_two_round_trips(
    engine: Engine, tmp_path: Path
) -> None:
    first, second = use_cases.create_foos(SqlUnitOfWork(engine), 5, count=2)

    with traced(engine, tmp_path / "revise") as revised:
        use_cases.revise_foo(SqlUnitOfWork(engine), first, 9)
    with traced(engine, tmp_path / "cancel") as cancelled:
        use_cases.cancel_foo(SqlUnitOfWork(engine), second)

    assert round_trips(revised) == round_trips(cancelled) == 2
    assert not any(m.startswith("BEGIN") for m in revised + cancelled)


def test_several_foos_are_saved_in_one_transaction(engine: Engine, tmp_path: Path) -> None:
    ids = use_cases.create_foos(SqlUnitOfWork(engine), 5, count=3)

    with traced(engine, tmp_path / "trace") as sent:
        use_cases.complete_foos(SqlUnitOfWork(engine), ids)

    statements = [m for m in sent if m != "Sync"]
    begin = next(i for i, m in enumerate(statements) if m.startswith("BEGIN"))
    assert [m.split()[0] for m in statements[:begin]] == ["SELECT"] * 3  # read before it
    assert [m.split()[0] for m in statements[begin + 1 :]] == ["WITH"] * 3 + ["COMMIT"]


def test_reaching_for_an_adapter_sends_nothing(engine: Engine, tmp_path: Path) -> None:
    with traced(engine, tmp_path / "trace") as sent, SqlUnitOfWork(engine) as uow:
        adapters = (uow.bars, uow.relay_queue, uow.deliveries, uow.outbox)
        assert None not in (*adapters, uow.monitor, uow.projection_log, uow.retention)

    assert sent == []  # no BEGIN, and no ROLLBACK of a transaction nobody needed


def bump_version(engine: Engine, foo_id: int) -> None:
    """Another process saves the foo: its version moves on."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE foos SET version = version + 1 WHERE id = :i"), {"i": foo_id}
        )


def outbox_size(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM outbox_events")).scalar_one())


def states(engine: Engine, ids: list[int]) -> list[str]:
    with engine.connect() as connection:
        query = text("SELECT state FROM foos WHERE id = ANY(:ids) ORDER BY id")
        return list(connection.execute(query, {"ids": ids}).scalars())


def test_a_foo_changed_since_it_was_read_is_not_overwritten(engine: Engine) -> None:
    (foo_id,) = use_cases.create_foos(SqlUnitOfWork(engine), 5)

    with SqlUnitOfWork(engine) as uow:
        foo = uow.foos.get(foo_id)  # read with no transaction around it
        bump_version(engine, foo_id)
        foo.complete()
        with pytest.raises(ConcurrentUpdateError):
            uow.commit()

    assert states(engine, [foo_id]) == ["pending"]
    assert outbox_size(engine) == 0


def test_several_foos_are_all_or_nothing_when_one_lost_a_race(engine: Engine) -> None:
    first, second = use_cases.create_foos(SqlUnitOfWork(engine), 5, count=2)

    with SqlUnitOfWork(engine) as uow:
        foos = [uow.foos.get(first), uow.foos.get(second)]
        bump_version(engine, second)
        for foo in foos:
            foo.complete()
        with pytest.raises(ConcurrentUpdateError):
            uow.commit()  # the first save went through in the transaction, the second did not

    assert states(engine, [first, second]) == ["pending", "pending"]
    assert outbox_size(engine) == 0


def test_a_write_after_an_unlocked_read_joins_the_transaction_of_the_commit(
    engine: Engine,
) -> None:
    (foo_id,) = use_cases.create_foos(SqlUnitOfWork(engine), 5)

    with SqlUnitOfWork(engine) as uow:
        uow.foos.get(foo_id).complete()
        uow.bars.add(Bar(2), uow.parts.lock_open(10))  # begins the transaction after the read
    assert outbox_size(engine) == 0  # left without commit: neither the bar nor the foo

    with SqlUnitOfWork(engine) as uow:
        uow.foos.get(foo_id).complete()
        uow.bars.add(Bar(2), uow.parts.lock_open(10))
        uow.commit()
    assert states(engine, [foo_id]) == ["completed"]
    assert outbox_size(engine) == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM bars")).scalar() == 1


def test_an_adapter_used_after_a_rollback_works_in_a_new_transaction(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        uow.bars.add(Bar(1), uow.parts.lock_open(10))
        uow.rollback()
        uow.bars.add(Bar(2), uow.parts.lock_open(10))
        uow.commit()

    with engine.connect() as connection:
        weights = connection.execute(text("SELECT weight FROM bars")).scalars().all()
    assert weights == [2]


def test_the_pool_gets_its_connection_back_out_of_autocommit(engine: Engine) -> None:
    (foo_id,) = use_cases.create_foos(SqlUnitOfWork(engine), 5)
    use_cases.complete_foo(SqlUnitOfWork(engine), foo_id)  # its read and save ran in autocommit

    with engine.connect() as connection:  # the same pooled connection
        connection.execute(text("UPDATE foos SET amount = 7 WHERE id = :i"), {"i": foo_id})
        connection.rollback()
    with engine.connect() as connection:
        amount = connection.execute(text("SELECT amount FROM foos WHERE id = :i"), {"i": foo_id})
        assert amount.scalar() == 5


def test_a_connection_lost_under_a_read_is_replaced_and_the_next_save_goes_through(
    engine: Engine, pg_url: str
) -> None:
    (foo_id,) = use_cases.create_foos(SqlUnitOfWork(engine), 5)

    with SqlUnitOfWork(engine) as uow:
        driver = uow.connection.connection.driver_connection
        assert driver is not None
        other = create_engine(pg_url)
        with other.connect() as connection:  # a server restart, a proxy's timeout
            kill = text("SELECT pg_terminate_backend(:pid)")
            assert connection.execute(kill, {"pid": driver.info.backend_pid}).scalar()
        other.dispose()
        with pytest.raises(OperationalError) as raised:  # SQLAlchemy's error, not the driver's
            uow.foos.get(foo_id)
        assert raised.value.connection_invalidated

    use_cases.complete_foo(SqlUnitOfWork(engine), foo_id)  # on a new connection
    assert states(engine, [foo_id]) == ["completed"]
    assert outbox_size(engine) == 1


def page_of(engine: Engine, foo_id: int) -> int:
    with engine.connect() as connection:
        ctid = connection.execute(text("SELECT ctid FROM foos WHERE id = :i"), {"i": foo_id})
        return int(str(ctid.scalar()).strip("()").split(",")[0])


def test_a_save_writes_the_new_version_of_a_foo_on_its_own_page(engine: Engine) -> None:
    # Pages filled by a batch of new foos, as an application's inserts fill them: the foos'
    # fillfactor leaves room, so the UPDATE is a HOT one (no index entry, little WAL).
    ids = use_cases.create_foos(SqlUnitOfWork(engine), 5, count=500)
    middle = [foo_id for foo_id in ids if page_of(engine, foo_id) == page_of(engine, ids[250])]
    assert len(middle) > 50  # a page that the batch filled, as far as the table lets it

    saved = middle[:10]  # their new versions fit in the room left, whatever else runs
    for foo_id in saved:
        use_cases.complete_foo(SqlUnitOfWork(engine), foo_id)

    assert {page_of(engine, foo_id) for foo_id in saved} == {page_of(engine, ids[250])}


def test_a_message_of_an_event_other_passes_applied_costs_two_statements(
    pg_url: str, tmp_path: Path
) -> None:
    """Under load most messages find their event applied by the passes of another delivery:
    one read says that no pass waits for a worker, and the message is back in one UPDATE, in
    a transaction of its own."""
    container = Container(Settings(database_url=pg_url))
    use_cases.create_bars(container.uow(), 2, count=10)
    first, second = use_cases.create_foos(container.uow(), 5, count=2)
    use_cases.complete_foos(container.uow(), [first, second])
    with container.engine.connect() as connection:
        events = list(
            connection.execute(text("SELECT id FROM outbox_events ORDER BY id")).scalars()
        )
    dispatch(container, events)
    assert handle_delivery(container.uow, events[1], container.heavy_step) is Outcome.APPLIED

    with traced(container.engine, tmp_path / "trace") as sent:
        outcome = handle_delivery(container.uow, events[0], container.heavy_step)

    assert outcome is Outcome.ALREADY_APPLIED
    assert [m for m in sent if m != "Sync"] == [
        "BEGIN",
        next(m for m in sent if m.startswith("SELECT EXISTS")),
        next(m for m in sent if m.startswith("UPDATE outbox_events")),
        "COMMIT",
    ]
    with container.engine.connect() as connection:
        query = text("SELECT state FROM outbox_events ORDER BY id")
        assert list(connection.execute(query).scalars()) == ["processed", "processed"]
    container.close()
