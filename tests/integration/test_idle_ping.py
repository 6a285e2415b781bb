"""The pool pings a connection on checkout only after it sat idle: a dead one is then replaced
before any unit of work sees it, and a save right after another pays no ping."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, create_engine, text

from infrastructure.sql.engines import ping_when_idle, postgres_timeouts

pytestmark = pytest.mark.postgres


def pooled_engine(url: str, idle_s: float) -> Engine:
    engine = create_engine(url, pool_size=1, connect_args=postgres_timeouts(5))
    ping_when_idle(engine, idle_s)
    return engine


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(url: str, pid: int) -> None:
    """End the backend and wait until it has exited (true within 10 s, or false): it sends its
    last message before it leaves, so by then that message is on the pooled socket."""
    other = create_engine(url)
    with other.connect() as connection:
        ended = connection.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})
        assert ended.scalar()
    other.dispose()


def test_a_connection_killed_while_idle_is_replaced_on_checkout(pg_url: str) -> None:
    engine = pooled_engine(pg_url, idle_s=0.2)
    first = backend_pid(engine)
    terminate(pg_url, first)  # a server restart, a proxy's idle timeout
    time.sleep(0.3)  # idle past idle_s

    second = backend_pid(engine)  # no error: the ping found it dead, the pool reconnected

    assert second != first
    engine.dispose()


def test_a_connection_used_just_before_is_not_pinged(pg_url: str) -> None:
    engine = pooled_engine(pg_url, idle_s=60)
    backend_pid(engine)
    pings: list[object] = []
    original = engine.dialect.do_ping
    engine.dialect.do_ping = lambda connection: pings.append(connection) or original(connection)  # type: ignore[method-assign]

    for _ in range(5):
        backend_pid(engine)

    assert pings == []
    engine.dialect.do_ping = original  # type: ignore[method-assign]
    engine.dispose()


def test_a_connection_killed_just_after_use_is_replaced_on_checkout(pg_url: str) -> None:
    engine = pooled_engine(pg_url, idle_s=60)  # never idle long enough for a ping by time
    first = backend_pid(engine)
    terminate(pg_url, first)  # the server says so on the socket, then closes it

    second = backend_pid(engine)

    assert second != first
    engine.dispose()
