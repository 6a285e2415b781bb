"""`postsave check`: is this deployment working? The database reachable and at the latest
migration, the broker reachable, and a relay batch recent. Every wait is bounded, and each check
runs against a deadline of its own, so an unreachable host gives an answer within seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from alembic.script import ScriptDirectory
from amqp.exceptions import NotFound
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from infrastructure.broker.celery_app import make_celery_app
from infrastructure.broker.dispatcher import DISPATCH_ERRORS
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.publishing import bounded_connection, broker_urls, connect, discard
from infrastructure.files import DatabaseFileError, sqlite_file
from infrastructure.settings import Settings
from infrastructure.sql.clock import seconds_since
from infrastructure.sql.engines import make_engine
from infrastructure.sql.grants import ROLES, missing_grants, roles_in_use
from infrastructure.sql.migrate import (
    SHARED_VERSION_TABLE,
    VERSION_TABLE,
    alembic_config,
    current_revisions,
    revisions_in_shared_table,
)
from infrastructure.sql.schema import outbox_counters
from infrastructure.urls import redact_url

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {'ok, ' if self.ok else ''}{self.detail}"


def default_max_relay_age_s(settings: Settings) -> float:
    """A tick runs every poll interval and commits at least one batch, idle or not; three
    missed ones, and at least 10 s, is a stop."""
    return max(3 * settings.poll_interval_s, 10.0)


def run_checks(
    settings: Settings, max_relay_age_s: float, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[Check]:
    """The database (with the relay's last batch, which it records) and the broker, side by
    side, each within `timeout_s` and a second of grace."""
    database = _Deadline(lambda: _database_and_relay(settings, max_relay_age_s, timeout_s))
    broker = _Deadline(lambda: [_broker(settings, timeout_s)])
    # RabbitMQ says how many consumers each queue has; the embedded broker cannot.
    consumers = _Deadline(lambda: _consumers(settings, timeout_s) if settings.uses_amqp else [])
    unanswered = f"no answer within {timeout_s:g} s"
    return (
        database.result(
            timeout_s + 1,
            [Check("database", False, unanswered), Check("relay", False, "unknown: " + unanswered)],
        )
        + broker.result(timeout_s + 1, [Check("broker", False, unanswered)])
        + consumers.result(timeout_s + 1, [Check("consumers", False, "unknown: " + unanswered)])
    )


class _Deadline:
    """Runs a check in a thread of its own, so that a wait nothing bounds (a name lookup, say)
    cannot hold the command: past the deadline, the check counts as failed."""

    def __init__(self, check: Callable[[], list[Check]]) -> None:
        self._checks: list[Check] | None = None
        self._thread = threading.Thread(target=self._run, args=(check,), daemon=True)
        self._thread.start()

    def _run(self, check: Callable[[], list[Check]]) -> None:
        self._checks = check()

    def result(self, timeout_s: float, otherwise: list[Check]) -> list[Check]:
        self._thread.join(timeout_s)
        return otherwise if self._checks is None else self._checks


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(error).__name__])[0]


def _database_and_relay(settings: Settings, max_age_s: float, timeout_s: float) -> list[Check]:
    where = redact_url(settings.database_url)
    try:
        engine = make_engine(settings.database_url, timeout_s, connect_timeout_s=timeout_s)
    except DatabaseFileError as error:
        return [Check("database", False, str(error)), _relay_unknown("the database is missing")]
    try:
        with engine.connect() as connection:
            revision, problem = _revision(connection, settings.database_url)
            if problem is not None:
                return [Check("database", False, problem), _relay_unknown("not migrated")]
            relay = _relay(connection, max_age_s)
            grants = _grants(connection)
        database = Check("database", True, f"{where} at the latest revision ({revision})")
        return [database, relay, *grants]
    except SQLAlchemyError as error:
        detail = f"{where}: {_first_line(error)}"
        return [Check("database", False, detail), _relay_unknown("the database did not answer")]
    finally:
        engine.dispose()


def _revision(connection: Connection, url: str) -> tuple[str, str | None]:
    """The database's revision, and what is wrong with it if it is not the latest."""
    script = ScriptDirectory.from_config(alembic_config(url))
    current = current_revisions(connection)
    latest = set(script.get_heads())
    shown = ", ".join(sorted(current)) or "none"
    if current == latest:
        return shown, None
    if not current:
        ours = {revision.revision for revision in script.walk_revisions()}
        left_behind = revisions_in_shared_table(connection, ours)
        if left_behind:  # an older postsave's; the next migration moves it
            return ", ".join(left_behind), (
                f"at revision {', '.join(left_behind)} in {SHARED_VERSION_TABLE}, not yet in "
                f"{VERSION_TABLE}; run `postsave migrate`"
            )
    return shown, (
        f"at revision {shown}, not the latest ({', '.join(sorted(latest))}); run `postsave migrate`"
    )


def _relay(connection: Connection, max_age_s: float) -> Check:
    age = connection.execute(select(seconds_since(outbox_counters.c.last_relay_pass_at))).scalar()
    if age is None:
        return Check("relay", False, "no relay batch has run yet; start beat and the relay worker")
    age = max(float(age), 0.0)
    if age > max_age_s:
        return Check(
            "relay",
            False,
            f"last batch {age:.0f} s ago (more than {max_age_s:g} s); "
            "is beat running, and a worker consuming postsave.poll?",
        )
    return Check("relay", True, f"last batch {age:.1f} s ago")


def _grants(connection: Connection) -> list[Check]:
    """Where postsave's group roles hold privileges here, whether they hold all that this
    revision needs: a migration adds tables and columns, `postsave grants` must follow."""
    if connection.dialect.name != "postgresql" or not roles_in_use(connection):
        return []
    missing = missing_grants(connection)
    if not missing:
        return [Check("grants", True, f"{', '.join(ROLES)} hold what this revision needs")]
    shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
    return [
        Check(
            "grants",
            False,
            f"{len(missing)} missing ({shown}); apply `postsave grants` with psql as the "
            "schema's owner",
        )
    ]


def _relay_unknown(why: str) -> Check:
    return Check("relay", False, f"unknown: {why}")


def _broker(settings: Settings, timeout_s: float) -> Check:
    """The broker, or each node of a broker list (side by side): ok while one answers, with
    what each said, so a lost node shows before the last one goes."""
    urls = broker_urls(settings.broker_url)
    if len(urls) < 2:
        return _broker_node(settings, timeout_s)
    nodes = [_Deadline(_node_check(replace(settings, broker_url=url), timeout_s)) for url in urls]
    checks = [
        node.result(timeout_s + 1, [Check("broker", False, f"{redact_url(url)}: no answer")])[0]
        for node, url in zip(nodes, urls, strict=True)
    ]
    answered = sum(check.ok for check in checks)
    return Check(
        "broker",
        answered > 0,
        f"{answered} of {len(urls)} nodes answered: " + "; ".join(check.detail for check in checks),
    )


def _node_check(settings: Settings, timeout_s: float) -> Callable[[], list[Check]]:
    return lambda: [_broker_node(settings, timeout_s)]


def _broker_node(settings: Settings, timeout_s: float) -> Check:
    where = redact_url(settings.broker_url)
    if settings.uses_embedded_broker:
        path = sqlite_file(settings.broker_url)
        if path is not None and not path.exists():  # connecting would create it
            return Check("broker", False, f"{where}: no such file; start a worker first")
    app = make_celery_app(settings)
    connection = bounded_connection(app, timeout_s)
    try:
        connect(app, connection)
        connection.default_channel  # noqa: B018 - opening a channel proves the login and vhost
        return Check("broker", True, f"{where} answered")
    except DISPATCH_ERRORS as error:  # the embedded broker's are SQLAlchemy's
        detail = str(error) or type(error).__name__
        return Check("broker", False, f"{where}: {detail}; check that it is up and the URL")
    finally:
        discard(connection)
        app.close()


def _consumers(settings: Settings, timeout_s: float) -> list[Check]:
    """A worker that stopped consuming a queue (`celery control cancel_consumer`, a consumer
    cancelled by the broker) still answers pings, and the relay may still run: each queue's
    consumers, as the broker counts them, show it."""
    app = make_celery_app(settings)
    connection = bounded_connection(app, timeout_s)
    counts: dict[str, int] = {}
    try:
        connect(app, connection)
        for queue in (RECALC_QUEUE, POLL_QUEUE):
            channel = connection.channel()  # a missing queue closes the channel it was asked on
            try:
                counts[queue] = int(channel.queue_declare(queue, passive=True).consumer_count)
            except NotFound:  # no worker has declared it yet
                counts[queue] = 0
    except DISPATCH_ERRORS as error:
        return [Check("consumers", False, f"unknown: {str(error) or type(error).__name__}")]
    finally:
        discard(connection)
        app.close()
    shown = ", ".join(f"{queue} {count}" for queue, count in counts.items())
    idle = [queue for queue, count in counts.items() if count == 0]
    if idle:
        return [
            Check(
                "consumers",
                False,
                f"no worker consumes {' or '.join(idle)} ({shown}); start one "
                "(celery -A tasks worker), or `celery -A tasks control add_consumer QUEUE`",
            )
        ]
    return [Check("consumers", True, shown)]
