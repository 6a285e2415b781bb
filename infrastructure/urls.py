"""The database and broker URLs: what postsave accepts, and how any URL is shown (never with its
password)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DATABASES = ("sqlite", "postgresql+psycopg")
BROKERS = ("amqp", "amqps", "pyamqp", "sqla+sqlite")
DATABASE_EXAMPLES = "sqlite:///path/to/postsave.db or postgresql+psycopg://user:pw@host:5432/db"
BROKER_EXAMPLES = (
    "amqp://user:pw@host:5672/vhost (RabbitMQ) or sqla+sqlite:///path/to/broker.db (embedded)"
)

AMQP_SCHEMES = ("amqp", "pyamqp")  # amqps:// starts with amqp too


def is_amqp_url(url: str) -> bool:
    """A RabbitMQ broker: messages expire by its TTL, batches are confirmed by a transaction."""
    return url.startswith(AMQP_SCHEMES)


HIDDEN = "***"
# libpq and kombu also take a password as a query parameter.
_QUERY_PASSWORD = re.compile(r"([?&;](?:password|passwd|pwd|sslpassword)=)[^&;#]*", re.I)


def redact_url(url: str) -> str:
    """`url` as written, with its password hidden; for any URL, parseable or not, and for
    each of a broker list's URLs ('url1;url2').

    Everything between the first ':' and the last '@' of the part after '://' is treated as
    the password: an unencoded '@' or '/' in a password then stays hidden too, and at worst a
    malformed URL is shown with more hidden than its password."""
    if ";" in url and url.count("://") > 1:
        return ";".join(_redact_one(one) for one in url.split(";"))
    return _redact_one(url)


def _redact_one(url: str) -> str:
    """`url` as written, with its password hidden; for any URL, parseable or not.

    Everything between the first ':' and the last '@' of the part after '://' is treated as
    the password: an unencoded '@' or '/' in a password then stays hidden too, and at worst a
    malformed URL is shown with more hidden than its password."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:{HIDDEN}@{location}"
    return scheme + separator + _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", rest)


PORT_PROBLEM = "has a port that is not a number from 1 to 65535; fix the port"


def _port_problem(port: int | None) -> str | None:
    return None if port is None or 0 < port < 65536 else PORT_PROBLEM


_MULTI_HOST = re.compile(r"^(?P<scheme>[^:/?#]+)://(?:(?P<userinfo>[^/?#]*)@)?(?P<hosts>[^/?#@]*)")


def sqlalchemy_database_url(url: str) -> str:
    """A PostgreSQL URL with several hosts in libpq's own form (`host1:5440,host2:5441`), in
    SQLAlchemy's (`?host=host1:5440&host=host2:5441`); any other URL as it is. libpq then
    tries the hosts in order (with `target_session_attrs=read-write`, until the primary)."""
    found = _MULTI_HOST.match(url)
    if found is None or "," not in found["hosts"] or found["scheme"].startswith("sqlite"):
        return url
    rest = url[found.end() :]
    path, question, query = rest.partition("?")
    hosts = "&".join(f"host={host}" for host in found["hosts"].split(",") if host)
    userinfo = f"{found['userinfo']}@" if found["userinfo"] is not None else ""
    return f"{found['scheme']}://{userinfo}{path or '/'}?{hosts}{'&' + query if question else ''}"


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL and what to do, or None when postsave can use it."""
    try:
        parsed = make_url(sqlalchemy_database_url(url))
    except ArgumentError:
        return f"is not a database URL; use {DATABASE_EXAMPLES}"
    except ValueError:  # SQLAlchemy casts the port with int()
        return PORT_PROBLEM
    if parsed.drivername not in DATABASES:
        return (
            f"names a database postsave does not support ({parsed.drivername!r}); "
            f"use {DATABASE_EXAMPLES}"
        )
    return _port_problem(parsed.port)


def _one_broker_problem(url: str) -> str | None:
    scheme, separator, _ = url.partition("://")
    if not separator:
        return f"is not a broker URL; use {BROKER_EXAMPLES}"
    if scheme not in BROKERS:
        return f"names a broker postsave does not support ({scheme!r}); use {BROKER_EXAMPLES}"
    if scheme == "sqla+sqlite":
        try:
            database = make_url(url.removeprefix("sqla+")).database
        except (ArgumentError, ValueError):
            return f"is not a broker URL; use {BROKER_EXAMPLES}"
        if database in (None, "", ":memory:"):
            # Each process would get a broker of its own: workers would never see a message.
            return "names no file for the embedded broker; use sqla+sqlite:///path/to/broker.db"
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced IPv6 bracket
        return f"is not a broker URL; use {BROKER_EXAMPLES}"
    try:
        return _port_problem(parts.port)
    except ValueError:
        return PORT_PROBLEM


def broker_url_problem(url: str) -> str | None:
    """What is wrong with a broker URL and what to do, or None when postsave can use it.
    kombu reads 'url1;url2' as fail-over brokers: each must be valid."""
    for one in url.split(";"):
        problem = _one_broker_problem(one.strip())
        if problem is not None:
            return problem
    return None
