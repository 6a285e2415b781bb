"""Recalculations of the tests' own, named by POSTSAVE_RECALCULATION as a team names its own.

`digest` is order-sensitive and counts every event: each bar's value is a hash chained over
the events it got, in the order it got them. An event missed, applied twice or out of order
gives another value, so one comparison per bar proves "each event once, in the one order"."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from domain.recalculation import LoggedEvent

MODULUS = (1 << 61) - 1  # a Mersenne prime: the digest fits a 64-bit integer column
DIGEST = "tests.recalculations:digest"


def chain(value: int, event_id: int, delta: int) -> int:
    return (value * 1_000_003 + event_id * 7_919 + delta + 1) % MODULUS


def digest(bar: Any, events: Sequence[LoggedEvent]) -> None:
    for event in events:
        bar.value = chain(bar.value, event.id, event.delta)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class History:
    """What the tables said, kept by the test: every sequenced event by position, and every
    bar's state at creation. Pruning deletes events and moves baselines; this does not."""

    events: dict[int, tuple[int, int]] = field(default_factory=dict)  # position: (id, delta)
    created: dict[int, tuple[int, int]] = field(default_factory=dict)  # bar: (value, position)

    def record(self, connection: Connection) -> None:
        for row in connection.execute(
            text("SELECT position, id, payload FROM outbox_events WHERE position IS NOT NULL")
        ):
            self.events[row.position] = (row.id, int(_json(row.payload)["delta"]))
        for row in connection.execute(text("SELECT bar_id, position, state FROM bar_baselines")):
            if row.bar_id not in self.created:
                self.created[row.bar_id] = (int(_json(row.state)["value"]), row.position)

    def problems(self, connection: Connection) -> list[str]:
        """Every bar against its creation value with every event after its creation folded
        in, in position order, up to the position it is at; and the order itself: positions
        without gaps, each event at one position. Empty when all hold."""
        self.record(connection)
        found = []
        positions = sorted(self.events)
        if positions and positions != list(range(positions[0], positions[-1] + 1)):
            found.append(f"positions have gaps: {positions}")
        ids = [event_id for event_id, _ in self.events.values()]
        if len(ids) != len(set(ids)):
            found.append("an event has two positions")
        bars = connection.execute(text("SELECT id, value, position FROM bars ORDER BY id"))
        for bar in bars:
            expected = self.expected(bar.id, bar.position)
            if int(bar.value) != expected:
                found.append(f"bar {bar.id} at {bar.position}: {bar.value}, expected {expected}")
        return found

    def expected(self, bar_id: int, through: int) -> int:
        value, since = self.created[bar_id]
        for position in range(since + 1, through + 1):
            value = chain(value, *self.events[position])
        return value


def digests_hold(connection: Connection, history: History | None = None) -> list[str]:
    return (history or History()).problems(connection)


def positions(connection: Connection) -> Mapping[str, int]:
    row = connection.execute(
        text(
            "SELECT head_position AS head, applied_position AS applied,"
            " (SELECT min(position) FROM bar_parts) AS lowest FROM bar_projection"
        )
    ).one()
    return dict(row._mapping)


def slow_digest(bar: Any, events: Sequence[LoggedEvent]) -> None:
    """The digest, taking 5 ms a bar: a pass over 1,000 bars outlasts a lease of 3 s."""
    time.sleep(0.005)
    digest(bar, events)


SLOW_DIGEST = "tests.recalculations:slow_digest"


def steady_digest(bar: Any, events: Sequence[LoggedEvent]) -> None:
    """The digest, taking 1 ms a bar: a pass over a part of 250 bars takes a quarter of a
    second, so a backlog of a few hundred events lasts seconds, even on an idle machine."""
    time.sleep(0.001)
    digest(bar, events)


STEADY_DIGEST = "tests.recalculations:steady_digest"
# Every recalculation whose bars hold the digest, and so can be checked against the one order.
DIGESTS = frozenset({DIGEST, SLOW_DIGEST, STEADY_DIGEST})
