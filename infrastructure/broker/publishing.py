"""What the relay's dispatcher and the post-commit nudge share: a broker connection of their own
whose every wait is bounded, the errors that mean "the broker did not take it", and message
expiry that does not depend on agreeing clocks."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

from amqp.exceptions import AMQPError, MessageNacked
from celery import Celery, uuid
from celery.utils.saferepr import saferepr
from kombu import Connection
from kombu.exceptions import KombuError, OperationalError

from infrastructure.urls import is_amqp_url

# py-amqp raises its own errors (ConnectionForced, RecoverableConnectionError, channel errors),
# not only kombu's, and MessageNacked, which is none of them, for a publish the broker refused;
# OSError covers refused, reset and timed-out sockets.
BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuError, AMQPError, MessageNacked, OSError)


def uses_amqp(app: Celery) -> bool:
    return is_amqp_url(str(app.conf.broker_url))


def expiry(app: Celery, seconds: float) -> dict[str, Any]:
    """Publish options that make a message stale after `seconds`.

    On RabbitMQ, the per-message TTL: the broker drops the message `seconds` after it arrived,
    whatever the clocks of sender and worker say. Celery's `expires` is an absolute time from
    the sender's clock, checked against the worker's: hosts whose clocks differ by more than
    `seconds` would discard every message. The embedded broker has no TTL, and runs on one
    host, so it keeps `expires`."""
    return {"expiration": seconds} if uses_amqp(app) else {"expires": seconds}


def broker_urls(url: str) -> list[str]:
    """The nodes of a broker list ('url1;url2', as Celery takes it), in order."""
    return [one.strip() for one in url.split(";") if one.strip()]


# Per broker list, the node that answered last: a new connection tries it first, and does not
# wait on a lost node's connect timeout each time it opens.
_answered_last: dict[str, int] = {}


def bounded_connection(app: Celery, timeout_s: float, confirmed: bool = False) -> Connection:
    """A connection of its own to the app's broker: connect, publish and wait for the broker's
    answer each give up after `timeout_s` (a broker under a memory or disk alarm blocks its
    publishers and never answers). Connect it with `connect`: over a broker list, it moves on
    to the next node when one does not answer. `confirmed`: on RabbitMQ, each publish waits
    for the broker's confirm, and one it refuses raises MessageNacked."""
    options = dict(app.conf.broker_transport_options or {})
    if uses_amqp(app):
        options.update(read_timeout=timeout_s, write_timeout=timeout_s)
        if confirmed:
            options.update(confirm_publish=True)
    listed = str(app.conf.broker_url)
    urls = broker_urls(listed)
    first = _answered_last.get(listed, 0) % max(len(urls), 1)
    return app.connection_for_write(
        url=";".join(urls[first:] + urls[:first]) or listed,
        connect_timeout=timeout_s,
        transport_options=options,
    )


def connect(app: Celery, connection: Connection) -> None:
    """Connect `connection` (from `bounded_connection`), trying each node of a broker list
    once, in order, without waiting between them. When none answers, the error names what
    each node said."""
    failures: list[str] = []

    def failed(error: BaseException, _interval: float) -> None:
        said = str(error) or type(error).__name__
        failures.append(f"{connection.hostname}:{connection.port}: {said}")

    try:
        connection.ensure_connection(
            errback=failed, max_retries=max(len(connection.alt), 1) - 1, interval_start=0
        )
    except BROKER_ERRORS as error:
        if len(failures) > 1:
            raise OperationalError(f"no broker node answered ({'; '.join(failures)})") from error
        raise
    listed = str(app.conf.broker_url)
    for index, url in enumerate(broker_urls(listed)):
        node = urlsplit(url)
        if (node.hostname, node.port or connection.transport.default_port) == (
            connection.hostname,
            connection.port,
        ):
            _answered_last[listed] = index
            return


def discard(connection: Connection | None) -> None:
    """Drop a connection that failed, without network I/O: it may be half-broken, or blocked."""
    if connection is not None:
        with contextlib.suppress(*BROKER_ERRORS):
            connection.collect()


class TaskMessages:
    """Celery's own messages (protocol 2) for one task, copied from one that Celery built:
    `create_task_message` costs about 27 us a message, where a copy with the fields that
    differ (the id, and the arguments with their repr) costs a few. Built again where an
    absolute `expires` is part of the message (the embedded broker), so it stays current."""

    def __init__(self, app: Celery, task: str, expires_s: float, sent_event: bool = False) -> None:
        self.app, self.task, self.sent_event = app, task, sent_event
        self.expiry = expiry(app, expires_s)
        self.expires_s = expires_s
        self._template: tuple[Any, ...] | None = None

    def message(
        self, args: tuple[Any, ...]
    ) -> tuple[dict[str, Any], dict[str, Any], tuple[Any, ...], dict[str, Any] | None]:
        """Headers, properties, body and the task-sent event's fields (if asked for)."""
        if self._template is None or "expires" in self.expiry:
            self._template = self.app.amqp.create_task_message(
                uuid(),
                self.task,
                (),
                {},
                expires=self.expiry.get("expires"),
                create_sent_event=self.sent_event,
            )
        headers, properties, body, fields = self._template
        task_id, argsrepr = uuid(), self._argsrepr(args)
        if fields is not None:
            fields = {**fields, "uuid": task_id, "root_id": task_id, "args": argsrepr}
        return (
            {**headers, "id": task_id, "root_id": task_id, "argsrepr": argsrepr},
            {**properties, "correlation_id": task_id},
            (args, *body[1:]),
            fields,
        )

    def _argsrepr(self, args: tuple[Any, ...]) -> str:
        if all(type(arg) is int for arg in args):
            return repr(args)  # what saferepr gives, in a fraction of its time
        maxlevels = self.app.conf.task_repr_maxlevels
        return saferepr(args, self.app.amqp.argsrepr_maxsize, maxlevels=maxlevels)
