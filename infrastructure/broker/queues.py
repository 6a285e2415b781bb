"""postsave's two queues, classic or quorum (POSTSAVE_QUEUE_TYPE), and their declaration.

A queue's type is fixed when it is declared: RabbitMQ refuses to declare an existing queue
with another type or other arguments (PRECONDITION_FAILED). Declaring says so in one line,
with what to do, instead of a worker's traceback."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from typing import Any

from amqp.exceptions import AccessRefused, NotFound, PreconditionFailed
from celery import Celery
from celery.events.event import get_exchange
from kombu.entity import Exchange, Queue
from kombu.exceptions import KombuError

from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.publishing import (
    BROKER_ERRORS,
    bounded_connection,
    connect,
    discard,
    uses_amqp,
)

# A quorum queue counts deliveries of a message; one delivered this often (a worker that dies
# holding it, again and again) is dropped. Its event's lease then ends and the relay sends a
# fresh message: the outbox, not the broker, holds the retries. Set here rather than left to
# the broker's default, which is unlimited in RabbitMQ 3.x and 20 in 4.x.
QUORUM_DELIVERY_LIMIT = 20


def task_queues(queue_type: str = "classic") -> tuple[Queue, Queue]:
    typed: dict[str, Any] = {} if queue_type == "classic" else {"x-queue-type": queue_type}
    if queue_type == "quorum":
        typed["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
    return (
        # A waiting tick makes the next one unnecessary: RabbitMQ keeps only the newest.
        Queue(
            POLL_QUEUE,
            Exchange(POLL_QUEUE, type="direct"),
            routing_key=POLL_QUEUE,
            queue_arguments={**typed, "x-max-length": 1, "x-overflow": "drop-head"},
        ),
        Queue(
            RECALC_QUEUE,
            Exchange(RECALC_QUEUE, type="direct"),
            routing_key=RECALC_QUEUE,
            queue_arguments=typed or None,
        ),
    )


class QueueMismatchError(KombuError):
    """A postsave queue exists with another type or other arguments than these settings'."""


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for queue '(?P<queue>[^']+)'.*?"
    r"received (?P<ours>.+?) but current is (?P<theirs>.+?)$",
    re.S,
)
_VALUE = re.compile(r"the value (?P<value>.+) of type '[^']*'", re.S)


def on_quorum_queues(app: Celery) -> bool:
    """postsave's queues are RabbitMQ quorum queues: its publishers wait for the broker's
    confirms. RabbitMQ 3.10 loses every later publish on a channel whose first publish to a
    quorum queue reaches a node while the queue elects a new leader (its leader's node just
    died); an AMQP transaction's tx_commit succeeds all the same, and only a confirm says so
    (a nack), after which a new channel works."""
    return uses_amqp(app) and queue_type_of(app.conf.task_queues) == "quorum"


def queue_type_of(queues: Iterable[Queue]) -> str:
    for queue in queues:
        arguments = getattr(queue, "queue_arguments", None) or {}
        return str(arguments.get("x-queue-type", "classic"))
    return "classic"


def declare_queues(channel: Any, queues: Iterable[Queue]) -> None:
    """Declare postsave's queues (with their exchanges and bindings) on `channel`."""
    queues = list(queues)
    for queue in queues:
        try:
            queue(channel).declare()
        except PreconditionFailed as error:
            raise mismatch(error, queue_type_of(queues)) from error


def mismatch(error: BaseException, queue_type: str) -> QueueMismatchError:
    """RabbitMQ's refusal of a declaration, said with what to do."""
    text = str(error)
    found = _INEQUIVALENT.search(text)
    if found is None:
        return QueueMismatchError(f"the broker refused to declare postsave's queues: {text}")
    arg, theirs, ours = found["arg"], _shown(found["theirs"]), _shown(found["ours"])
    if arg == "x-queue-type":  # no x-queue-type: a classic queue
        there = f"as a {theirs or 'classic'} queue"
        here = f"a {ours or 'classic'} one"
    else:
        there, here = f"with {arg} {theirs or 'unset'}", f"{arg} {ours or 'unset'}"
    return QueueMismatchError(
        f"queue {found['queue']} exists {there}, but POSTSAVE_QUEUE_TYPE={queue_type} "
        f"declares {here}: set POSTSAVE_QUEUE_TYPE to the type it has, or delete postsave's "
        "queues with every worker stopped and the queues empty (docs/operations.md, "
        '"Switching to quorum queues")'
    )


def _shown(value: str) -> str | None:
    """An argument as RabbitMQ shows it (`none`, `the value 'quorum' of type 'longstr'`,
    `the value 20 of type 'signedint'`): the value alone, None for none."""
    value = value.strip()
    if value == "none":
        return None
    found = _VALUE.fullmatch(value)
    return (found["value"] if found else value).strip("'")


class BrokerTlsError(KombuError):
    """The broker's certificate does not verify against the CA, or not for its host name."""


class BrokerAccessError(KombuError):
    """The broker user may not do what a postsave process needs (docs/operations.md)."""


def check_queues(
    app: Celery,
    timeout_s: float,
    queues: Iterable[Queue] | None = None,
    hostname: str | None = None,
) -> None:
    """Declare the queues a worker consumes (all of postsave's by default) before it starts,
    and what Celery itself declares (the pidbox and event exchanges, the worker's own pidbox
    queue): QueueMismatchError when a queue exists with another type, BrokerAccessError when
    the worker's broker user may not declare one of them. A broker that does not answer is
    the worker's to retry."""
    if not uses_amqp(app):
        return
    connection = bounded_connection(app, timeout_s)
    try:
        connect(app, connection)
        channel = connection.default_channel
        declare_queues(channel, queues or app.conf.task_queues)
        mailbox = app.control.mailbox
        for exchange in (mailbox.exchange, mailbox.reply_exchange, get_exchange(connection)):
            exchange(channel).declare()
        if hostname:
            mailbox.get_queue(hostname)(channel).declare()
    except AccessRefused as error:
        raise BrokerAccessError(
            f"the broker refused this worker's user ({error.reply_text}); give it the "
            "permissions docs/operations.md lists for it (Least privilege: broker users)"
        ) from error
    except QueueMismatchError:
        raise
    except BROKER_ERRORS as error:
        refused = _certificate_refusal(error)
        if refused is not None:  # retrying cannot help: a setting is wrong
            raise BrokerTlsError(
                f"the broker's certificate does not verify ({refused.verify_message}): check "
                "POSTSAVE_BROKER_CA_FILE and the host names in POSTSAVE_BROKER_URL"
            ) from error
        return
    finally:
        discard(connection)


def _certificate_refusal(error: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error (kombu wraps it)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ssl.SSLCertVerificationError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def ensure_queues(connection: Any, queues: Iterable[Queue]) -> Any:
    """A channel for publishing to postsave's queues, as the workers declared them. Checked
    passively, which needs no permission, and declared here only if missing, which needs the
    configure permission a publisher's broker user may lack: its refusal then says so."""
    queues = list(queues)
    channel = connection.channel()
    if connection.transport.driver_type != "amqp":
        declare_queues(channel, queues)
        return channel
    try:
        for queue in queues:
            channel.exchange_declare(queue.exchange.name, queue.exchange.type, passive=True)
            channel.queue_declare(queue.name, passive=True)
    except NotFound:
        channel = connection.channel()  # the refusal closed the other one
        declare_queues(channel, queues)
    return channel
