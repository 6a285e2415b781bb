"""The embedded broker (kombu's SQLAlchemy transport on SQLite) has no transactions to roll back
and no TTL: the dispatcher takes back the messages of a dispatch that failed part-way, and
deletes the stale message of an event it dispatches again."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from domain.errors import DispatchError
from infrastructure.bootstrap import Container
from infrastructure.broker.names import RECALC_QUEUE
from infrastructure.settings import Settings


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    built = Container(
        Settings(
            database_url=f"sqlite:///{tmp_path}/unused.db",
            broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        )
    )
    yield built
    built.close()


def messages(tmp_path: Path) -> list[str]:
    """The argsrepr of every recalculation message waiting for a consumer."""
    with closing(sqlite3.connect(tmp_path / "broker.db")) as connection:
        rows = connection.execute(
            "SELECT json_extract(m.payload, '$.headers.argsrepr') FROM kombu_message m"
            " JOIN kombu_queue q ON q.id = m.queue_id WHERE m.visible = 1 AND q.name = ?"
            " ORDER BY m.id",
            (RECALC_QUEUE,),
        )
        return [row[0] for row in rows]


def test_a_dispatch_that_fails_part_way_leaves_no_message_behind(
    container: Container, tmp_path: Path
) -> None:
    container.dispatcher.dispatch([1], expires_in_s=30)  # the transport makes its tables
    with closing(sqlite3.connect(tmp_path / "broker.db")) as connection:
        connection.execute(
            "CREATE TRIGGER full BEFORE INSERT ON kombu_message"
            " WHEN (SELECT count(*) FROM kombu_message) >= 3"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        connection.commit()

    with pytest.raises(DispatchError, match="disk full"):
        container.dispatcher.dispatch([10, 11, 12, 13], expires_in_s=30)

    # Two of its messages had gone in when the third failed; like a rolled-back channel
    # transaction, none of them stays.
    assert messages(tmp_path) == ["(1,)"]


def test_an_event_dispatched_again_has_one_message_waiting(
    container: Container, tmp_path: Path
) -> None:
    container.dispatcher.dispatch([1, 2], expires_in_s=30)
    container.dispatcher.dispatch([2, 3], expires_in_s=30)  # 2's lease ended unconsumed

    assert messages(tmp_path) == ["(1,)", "(2,)", "(3,)"]
