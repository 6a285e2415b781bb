"""`postsave status` and `postsave dead ...` with the parts: how many, behind, dead, rebuilding,
the projection's lag; dead parts listed and retried beside the dead events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine

from domain.backoff import RetryPolicy
from domain.delivery import Outcome, handle_delivery
from domain.outbox import RelayLimits
from domain.passes import HeavyStep
from domain.recalculation import EXAMPLE_RECALCULATION, recalculate
from domain.relay import relay_once
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDispatcher
from tests.cli.conftest import Result, Run, event_ids, execute, snapshot

AGO_100_S = {
    "postgresql": "clock_timestamp() - interval '100 seconds'",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now', '-100 seconds')",
}


def status(cli: Run) -> dict[str, Any]:
    result = cli("status", "--json")
    assert (result.code, result.err, len(result.out_lines)) == (0, "", 1)
    parsed = json.loads(result.out)
    assert isinstance(parsed, dict)
    return parsed


def breaking(bar_id: int, attempts: int = 1) -> HeavyStep:
    """The example's recalculation, but it raises on one bar: its part dies after `attempts`
    failures, and backs off for 5 to 10 minutes after each before that."""

    def recalculate_unless(bar: Any, events: Sequence[Any]) -> None:
        if bar.id == bar_id:
            raise RuntimeError(f"bar {bar_id} is broken:\n  the disk is full")
        recalculate(bar, events)

    retry = RetryPolicy(max_attempts=attempts, base_delay_s=600, max_delay_s=600)
    return HeavyStep(recalculate_unless, EXAMPLE_RECALCULATION, retry=retry)


@dataclass(frozen=True)
class Stopped:
    """Parts 1, 2, 3 of a bar each; two events applied by parts 2 and 3, waiting for part 1,
    which is dead; one unreadable event, dead. Every event occurred 100 s ago."""

    events: list[int]  # the two readable ones
    unreadable: int


@pytest.fixture
def stopped(cli: Run, db: Engine, container: Container, monkeypatch: pytest.MonkeyPatch) -> Stopped:
    monkeypatch.setenv("POSTSAVE_PART_SIZE", "1")
    [broken, *_] = map(int, cli("bar", "create", "--weight", "2", "--count", "3").out_lines)
    foos = cli("foo", "create", "--amount", "5", "--count", "2").out_lines
    assert cli("foo", "complete", *foos).code == 0
    execute(db, "INSERT INTO outbox_events (event_type, payload) VALUES ('FooCompleted', '{}')")
    execute(db, f"UPDATE outbox_events SET occurred_at = {AGO_100_S[db.dialect.name]}")
    relay_once(container.uow(), InMemoryDispatcher(), RelayLimits())
    [first, second, unreadable] = event_ids(db)
    assert handle_delivery(container.uow, first, breaking(broken)) is Outcome.WAITING
    return Stopped([first, second], unreadable)


def test_status_json_keeps_its_keys_and_adds_the_parts_and_the_projection_lag(
    cli: Run,
) -> None:
    assert status(cli) == {
        "pending": 0,
        "in_flight": 0,
        "processed": 0,
        "dead": 0,
        "oldest_pending_age_s": None,
        "drained": True,
        "parts": 0,
        "parts_behind": 0,
        "parts_backing_off": 0,
        "parts_dead": 0,
        "parts_rebuilding": 0,
        "events_behind": 0,
        "projection_lag_s": 0.0,
    }


def test_status_shows_a_dead_part_holding_the_projection_back(cli: Run, stopped: Stopped) -> None:
    shown = status(cli)

    assert (shown["pending"], shown["in_flight"], shown["dead"]) == (1, 1, 1)
    assert (shown["parts"], shown["parts_behind"], shown["parts_dead"]) == (3, 1, 1)
    assert (shown["parts_backing_off"], shown["parts_rebuilding"], shown["events_behind"]) == (
        0,
        0,
        2,
    )
    assert 100 <= shown["projection_lag_s"] < 160
    assert shown["projection_lag_s"] <= shown["oldest_pending_age_s"]

    result = cli("status")
    assert (result.code, result.err) == (0, "")
    assert [line.split() for line in result.out_lines[5:10]] == [
        ["parts", "3"],
        ["behind", "1", "(up", "to", "2", "events)"],
        ["backing", "off", "0"],
        ["dead", "1"],
        ["rebuilding", "0"],
    ]
    [lag_line] = result.out_lines[10:]
    assert lag_line.startswith("projection lag ")
    assert 100 <= float(lag_line.split()[-2]) < 160


def test_status_shows_a_part_backing_off_after_a_failed_pass(
    cli: Run, db: Engine, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSAVE_PART_SIZE", "1")
    [broken, _] = map(int, cli("bar", "create", "--weight", "2", "--count", "2").out_lines)
    assert cli("foo", "complete", *cli("foo", "create", "--amount", "5").out_lines).code == 0
    relay_once(container.uow(), InMemoryDispatcher(), RelayLimits())
    [event_id] = event_ids(db)

    handle_delivery(container.uow, event_id, breaking(broken, attempts=3))

    shown = status(cli)
    assert (shown["parts"], shown["parts_behind"], shown["parts_backing_off"]) == (2, 1, 1)
    assert (shown["parts_dead"], shown["events_behind"]) == (0, 1)
    assert cli("dead", "list").out == ""  # not dead: it is tried again after its backoff


def test_dead_list_shows_dead_events_then_dead_parts_each_on_one_line(
    cli: Run, stopped: Stopped
) -> None:
    result = cli("dead", "list")

    assert (result.code, result.err) == (0, "")
    [event_line, part_line] = result.out_lines
    assert event_line.startswith(f"{stopped.unreadable}\tFooCompleted\tfailures=1\tdispatches=0\t")
    assert part_line == (
        "part 1\tfailures=1\twaiting=2\tRuntimeError: bar 1 is broken: the disk is full"
    )


def test_retrying_a_dead_part_by_id_revives_it_and_the_projection_catches_up(
    cli: Run, container: Container, stopped: Stopped
) -> None:
    result = cli("dead", "retry", "--part", "1")

    assert (result.code, result.err, result.out) == (0, "", "part 1\n")
    [still_dead] = cli("dead", "list").out_lines  # the unreadable event, not retried
    assert still_dead.startswith(f"{stopped.unreadable}\t")
    assert status(cli)["parts_dead"] == 0
    for event_id in stopped.events:
        handle_delivery(container.uow, event_id, container.heavy_step)
    shown = status(cli)
    assert (shown["parts_behind"], shown["events_behind"], shown["projection_lag_s"]) == (0, 0, 0)
    assert (shown["processed"], shown["pending"], shown["in_flight"]) == (2, 0, 0)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--part", "2"], "part(s) 2 are not dead; nothing was retried"),  # alive
        (["--part", "1", "--part", "99"], "part(s) 99 are not dead; nothing was retried"),
        (["{unreadable}", "--part", "3"], "part(s) 3 are not dead; nothing was retried"),
        (["{first}", "--part", "1"], "event(s) {first} are not dead; nothing was retried"),
    ],
)
def test_retrying_a_part_that_is_not_dead_changes_nothing(
    cli: Run, db: Engine, stopped: Stopped, argv: list[str], problem: str
) -> None:
    ids = {"unreadable": stopped.unreadable, "first": stopped.events[0]}
    before = snapshot(db)

    result = cli("dead", "retry", *(arg.format(**ids) for arg in argv))

    assert (result.code, result.out) == (1, "")
    assert result.err == f"postsave: error: {problem.format(**ids)}; nothing was changed\n"
    assert snapshot(db) == before


def test_retry_without_ids_revives_every_dead_event_and_every_dead_part(
    cli: Run, stopped: Stopped
) -> None:
    result = cli("dead", "retry")

    assert (result.code, result.err) == (0, "")
    assert result.out_lines == [str(stopped.unreadable), "part 1"]
    assert cli("dead", "list").out == ""
    shown = status(cli)
    assert (shown["dead"], shown["parts_dead"]) == (0, 0)
    assert cli("dead", "retry").out == ""  # nothing dead any more


def test_retrying_events_by_id_leaves_the_dead_parts_dead(cli: Run, stopped: Stopped) -> None:
    result = cli("dead", "retry", str(stopped.unreadable))

    assert (result.code, result.out_lines) == (0, [str(stopped.unreadable)])
    assert status(cli)["parts_dead"] == 1


@pytest.mark.parametrize("bad", ["0", "x", "-1"])
def test_a_part_id_that_is_not_an_id_is_a_usage_error(cli: Run, bad: str) -> None:
    result: Result = cli("dead", "retry", "--part", bad)

    assert (result.code, result.out) == (2, "")
    assert len(result.err.splitlines()) == 1
    assert "--part" in result.err
