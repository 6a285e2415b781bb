"""What each of postsave's broker users may do on its RabbitMQ vhost: (configure, write, read)
regular expressions, as `rabbitmqctl set_permissions` takes them.

RabbitMQ matches one expression against exchanges and queues alike, and postsave's exchanges
are named after their queues: a user that may read the exchange `postsave.recalc` (to bind a
queue to it) may also consume and purge the queue. So only the worker that consumes a queue
declares and binds it; the others check passively (which needs no permission) and publish.
Celery's own: each worker declares the pidbox exchanges and a pidbox queue named after its
`--hostname` (relay@... and recalc...@... in deploy/), and the task-event exchange."""

from __future__ import annotations

from typing import NamedTuple

from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE


class Permissions(NamedTuple):
    configure: str
    write: str
    read: str


def _any(*names: str) -> str:
    return "^(" + "|".join(names) + ")$"


_POLL, _RECALC = POLL_QUEUE.replace(".", r"\."), RECALC_QUEUE.replace(".", r"\.")
_EVENTS, _PIDBOX, _REPLY = "celeryev", r"celery\.pidbox", r"reply\.celery\.pidbox"


def _worker(queue: str, pidbox_queue: str, publishes: tuple[str, ...]) -> Permissions:
    """A Celery worker consuming `queue`: it declares and binds it, takes part in Celery's
    remote control (`celery inspect`, `celery control`) and sends task events."""
    return Permissions(
        configure=_any(queue, _EVENTS, _PIDBOX, _REPLY, pidbox_queue),
        write=_any(queue, *publishes, _EVENTS, _REPLY, pidbox_queue),
        read=_any(queue, _PIDBOX, pidbox_queue),
    )


BROKER_USERS: dict[str, Permissions] = {
    # The application's nudge: a tick to the poll exchange, nothing else.
    "postsave-app": Permissions("^$", f"^{_POLL}$", "^$"),
    # Beat: ticks, and the task-sent event of each.
    "postsave-beat": Permissions(f"^{_EVENTS}$", _any(_POLL, _EVENTS), "^$"),
    # The relay worker (--hostname relay@...): consumes ticks, publishes recalculations.
    "postsave-relay": _worker(_POLL, r"relay@.+\.celery\.pidbox", (_RECALC,)),
    # The recalculation workers (--hostname recalc<N>@...): consume them; a prune with more to
    # do sends itself again to the same queue.
    "postsave-worker": _worker(_RECALC, r"recalc[^@]*@.+\.celery\.pidbox", ()),
    # `postsave check` and the exporter: passive declarations only.
    "postsave-monitor": Permissions("^$", "^$", "^$"),
}


def rabbitmqctl_lines(vhost: str) -> list[str]:
    """The commands that give each user its permissions (the users and their passwords are
    the operator's: `rabbitmqctl add_user NAME` first)."""
    return [
        f"rabbitmqctl set_permissions -p {vhost} {user} "
        f"'{permissions.configure}' '{permissions.write}' '{permissions.read}'"
        for user, permissions in BROKER_USERS.items()
    ]
