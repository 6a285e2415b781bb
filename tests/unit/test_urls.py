"""URLs: any URL is shown without its password; the database and broker URLs postsave accepts."""

from __future__ import annotations

import pytest

from infrastructure.urls import (
    broker_url_problem,
    database_url_problem,
    redact_url,
    sqlalchemy_database_url,
)

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy URLs
        (
            f"postgresql+psycopg://postsave:{SECRET}@db.internal:5432/postsave",
            "postgresql+psycopg://postsave:***@db.internal:5432/postsave",
        ),
        ("postgresql+psycopg://postsave@db/postsave", "postgresql+psycopg://postsave@db/postsave"),
        ("sqlite:///var/postsave.db", "sqlite:///var/postsave.db"),
        # broker URLs: kombu's, with a vhost, and the embedded broker
        (f"amqp://guest:{SECRET}@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        (f"amqps://mq:{SECRET}@mq.internal/postsave", "amqps://mq:***@mq.internal/postsave"),
        ("sqla+sqlite:///var/broker.db", "sqla+sqlite:///var/broker.db"),
        # an unencoded '@' or '/' in the password: hidden whole, where parsers cut it apart
        (f"postgresql+psycopg://u:p@{SECRET}@h/db", "postgresql+psycopg://u:***@h/db"),
        (f"amqp://u:p/{SECRET}@h//", "amqp://u:***@h//"),
        # malformed URLs, shown as written but for the password
        (f"postgresql+psycopg//u:{SECRET}@h/db", "postgresql+psycopg//u:***@h/db"),
        (f"u:{SECRET}@h", "u:***@h"),
        (f"postgresql+psycopg://u:{SECRET}@h:abc/db", "postgresql+psycopg://u:***@h:abc/db"),
        ("not a url", "not a url"),
        # a password in the query string
        (
            f"postgresql+psycopg://u@h/db?sslmode=require&password={SECRET}&x=1",
            "postgresql+psycopg://u@h/db?sslmode=require&password=***&x=1",
        ),
        # fail-over brokers: every password hidden, every node shown
        (
            f"amqp://u:{SECRET}@h1//;amqp://u:{SECRET}x@h2//",
            "amqp://u:***@h1//;amqp://u:***@h2//",
        ),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/postsave.db",
        "sqlite:////srv/postsave/postsave.db",
        "sqlite://",
        "postgresql+psycopg://postsave:pw@db.internal:5432/postsave",
        "postgresql+psycopg://postsave@db/postsave?connect_timeout=3",
    ],
)
def test_supported_databases_are_accepted(url: str) -> None:
    assert database_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u:pw@h/db", "names a database postsave does not support ('mysql')"),
        ("postgresql://u@h/db", "does not support ('postgresql'); use"),
        ("postgresql+psycopg2://u@h/db", "does not support ('postgresql+psycopg2')"),
        ("postgresql+psycopg://u@127.0.0.1:abc/db", "has a port that is not a number"),
        ("postgresql+psycopg://u@127.0.0.1:99999/db", "has a port that is not a number"),
        ("not a url", "is not a database URL"),
        ("postgresql+psycopg//missing-colon", "is not a database URL"),
    ],
)
def test_other_databases_are_refused_with_what_to_do(url: str, problem: str) -> None:
    found = database_url_problem(url)
    assert found is not None
    assert problem in found
    assert "; use " in found or "; fix the port" in found


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672//",
        "amqps://mq.internal/postsave",
        "pyamqp://u:pw@h:5672/v",
        "amqp://",
        "amqp://h1//;amqp://h2//",
        "sqla+sqlite:///var/broker.db",
    ],
)
def test_supported_brokers_are_accepted(url: str) -> None:
    assert broker_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # nothing in postsave uses the in-memory broker, and workers could not share it
        ("memory://", "names a broker postsave does not support ('memory')"),
        ("redis://localhost:6379/0", "does not support ('redis')"),
        ("sqla+postgresql://u@h/db", "does not support ('sqla+postgresql')"),
        ("amqp//guest:guest@h//", "is not a broker URL"),
        ("localhost", "is not a broker URL"),
        ("amqp://[::1//", "is not a broker URL"),
        ("amqp://guest:guest@h:abc//", "has a port that is not a number"),
        ("amqp://h:70000//", "has a port that is not a number"),
        ("amqp://h1//;redis://h2", "does not support ('redis')"),
        ("sqla+sqlite://", "names no file for the embedded broker"),
    ],
)
def test_other_brokers_are_refused_with_what_to_do(url: str, problem: str) -> None:
    found = broker_url_problem(url)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("url", "as_sqlalchemy_takes_it"),
    [
        (
            f"postgresql+psycopg://u:{SECRET}@pg1:5440,pg2:5441/postsave"
            "?target_session_attrs=read-write",
            f"postgresql+psycopg://u:{SECRET}@/postsave"
            "?host=pg1:5440&host=pg2:5441&target_session_attrs=read-write",
        ),
        ("postgresql+psycopg://pg1,pg2:5441/db", "postgresql+psycopg:///db?host=pg1&host=pg2:5441"),
        ("postgresql+psycopg://u@pg1,pg2", "postgresql+psycopg://u@/?host=pg1&host=pg2"),
        # one host, SQLAlchemy's own form, and SQLite: as they are
        ("postgresql+psycopg://u@pg1:5440/db", "postgresql+psycopg://u@pg1:5440/db"),
        (
            "postgresql+psycopg://u@/db?host=pg1:5440&host=pg2:5441",
            "postgresql+psycopg://u@/db?host=pg1:5440&host=pg2:5441",
        ),
        ("sqlite:///var/postsave.db", "sqlite:///var/postsave.db"),
    ],
)
def test_several_hosts_in_libpqs_own_form_are_given_to_sqlalchemy_in_its_form(
    url: str, as_sqlalchemy_takes_it: str
) -> None:
    assert sqlalchemy_database_url(url) == as_sqlalchemy_takes_it
    assert database_url_problem(url) is None


def test_sqlalchemy_hands_libpq_every_host_and_port_of_a_multi_host_url() -> None:
    from sqlalchemy import create_engine

    url = "postgresql+psycopg://u@pg1:5440,pg2:5441/db?target_session_attrs=read-write"
    engine = create_engine(sqlalchemy_database_url(url))
    _, params = engine.dialect.create_connect_args(engine.url)
    assert (params["host"], params["port"], params["target_session_attrs"]) == (
        "pg1,pg2",
        "5440,5441",
        "read-write",
    )
