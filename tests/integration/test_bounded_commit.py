"""A primary and its standbys, on PostgreSQL clusters of the tests' own: a commit that no
synchronous standby confirms returns within POSTSAVE_STATEMENT_TIMEOUT, committed on the
primary; and a URL of several hosts in libpq's form reaches whichever host takes writes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain import use_cases
from domain.foo import FooState
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.commits import CommitNotConfirmedError
from tests.e2e.pipeline import FAULT_REPORTS
from tests.e2e.postgres_cluster import Cluster, Clusters
from tests.e2e.rabbitmq_node import free_port

pytestmark = pytest.mark.postgres

BOUND_S = 1.0


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error, what it wraps (SQLAlchemy's `orig`) and what raised it."""
    while error is not None:
        yield error
        orig = getattr(error, "orig", None)
        error = orig if isinstance(orig, BaseException) else error.__cause__


def events_of(container: Container, foo_ids: list[int]) -> list[tuple[int, str]]:
    with container.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT (payload->>'foo_id')::int, event_type FROM outbox_events"
                " WHERE (payload->>'foo_id')::int = ANY(:ids) ORDER BY id"
            ),
            {"ids": foo_ids},
        )
        return [(row[0], row[1]) for row in rows]


@pytest.mark.parametrize(
    "foos", [1, 3], ids=["one foo, one statement", "three foos, a transaction"]
)
def test_a_commit_no_standby_confirms_raises_within_the_bound_and_stands_on_the_primary(
    clusters: Clusters, foos: int
) -> None:
    primary = clusters.primary(synchronous_standby=None)
    container = Container(
        Settings(database_url=primary.postsave_database(), statement_timeout_s=BOUND_S)
    )
    try:
        ids = use_cases.create_foos(container.uow(), 7, count=foos)
        # Now every commit waits for a standby that is not there.
        primary.configure(synchronous_standby_names="absent_standby")
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            use_cases.complete_foos(container.uow(), ids)
        returned_s = time.monotonic() - started
        FAULT_REPORTS.append(
            f"commit not confirmed ({foos} foo(s)): raised after {returned_s:.2f} s "
            f"(bound {BOUND_S:g} s): {type(raised.value).__name__}"
        )
        assert any(isinstance(cause, CommitNotConfirmedError) for cause in causes(raised.value))
        # Committed on the primary all the same: the foos and their events are there.
        with container.uow() as uow:
            assert [uow.foos.get(foo_id).state for foo_id in ids] == [FooState.COMPLETED] * foos
        assert events_of(container, ids) == [(foo_id, "FooCompleted") for foo_id in ids]
    finally:
        container.close()


def server_port(container: Container) -> tuple[int, bool]:
    with container.engine.connect() as connection:
        row = connection.execute(text("SELECT inet_server_port(), pg_is_in_recovery()")).one()
        return int(row[0]), bool(row[1])


def from_env(url: str) -> Container:
    """Settings as a worker reads them: the URL in libpq's form, rewritten for SQLAlchemy."""
    return Container(Settings.from_env({"POSTSAVE_DATABASE_URL": url}))


def test_a_url_of_several_hosts_reaches_the_primary_whichever_comes_first(
    clusters: Clusters,
) -> None:
    primary = clusters.primary()
    standby = clusters.standby(primary)
    primary.postsave_database()
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there

    def url(*hosts: str | Cluster, attrs: str = "?target_session_attrs=read-write") -> str:
        listed = ",".join(h.address if isinstance(h, Cluster) else h for h in hosts)
        return f"postgresql+psycopg://postgres@{listed}/postsave{attrs}"

    for first in (standby, closed):
        container = from_env(url(first, primary))
        try:
            assert server_port(container) == (primary.port, False)
            [foo] = use_cases.create_foos(container.uow(), 3)
            use_cases.complete_foo(container.uow(), foo)  # confirmed by the standby
        finally:
            container.close()
    # Without target_session_attrs, libpq keeps the first host that answers: the standby.
    container = from_env(url(standby, primary, attrs=""))
    try:
        assert server_port(container) == (standby.port, True)
    finally:
        container.close()
