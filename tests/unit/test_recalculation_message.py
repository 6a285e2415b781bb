"""The recalculation task's message parsing: one positive integer event id, or the message is
dropped. Neither needs a broker nor a database."""

from __future__ import annotations

from typing import Any

import pytest

from infrastructure.broker.messages import LOGGED_CHARS, event_id_of
from tasks.recalculation import recalculate_bars


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((5,), {}, 5),
        ((), {"event_id": 5}, 5),
        ((2**40,), {}, 2**40),
    ],
    ids=["positional", "keyword", "big"],
)
def test_a_well_formed_message_yields_its_event_id(
    args: tuple[Any, ...], kwargs: dict[str, Any], expected: int
) -> None:
    assert event_id_of(args, kwargs) == expected


MALFORMED: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1, 2), {}),
    (("5",), {}),
    ((True,), {}),
    ((0,), {}),
    ((-3,), {}),
    ((1.5,), {}),
    ((None,), {}),
    ((), {"id": 5}),
    (({"x": 1},), {}),
    ((5,), {"event_id": 5}),
    ((), {"event_id": 5, "extra": 1}),
    ((), {"event_id": "5"}),
    ((), {"event_id": False}),
]
MALFORMED_IDS = [
    "empty",
    "two-ids",
    "string",
    "bool",
    "zero",
    "negative",
    "float",
    "none",
    "wrong-keyword",
    "object",
    "positional-and-keyword",
    "extra-keyword",
    "keyword-string",
    "keyword-bool",
]


@pytest.mark.parametrize(("args", "kwargs"), MALFORMED, ids=MALFORMED_IDS)
def test_a_malformed_message_yields_no_event_id(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    assert event_id_of(args, kwargs) is None


@pytest.mark.parametrize(("args", "kwargs"), MALFORMED, ids=MALFORMED_IDS)
def test_the_task_drops_a_malformed_message_and_logs_it(
    args: tuple[Any, ...], kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Dropped before any database is opened: the call needs neither a broker nor a database.
    with caplog.at_level("ERROR", logger="infrastructure.broker.messages"):
        assert recalculate_bars(*args, **kwargs) == "malformed"

    assert [record.getMessage() for record in caplog.records] == [
        f"recalculate_bars: dropped a malformed message args={args!r} kwargs={kwargs!r}"
    ]


def test_a_huge_malformed_message_is_logged_shortened(caplog: pytest.LogCaptureFixture) -> None:
    huge = "x" * 5_000_000

    with caplog.at_level("ERROR", logger="infrastructure.broker.messages"):
        assert recalculate_bars(huge) == "malformed"

    [record] = caplog.records
    assert len(record.getMessage()) < LOGGED_CHARS + 100
    assert record.getMessage().endswith(
        f"... ({len(repr(huge)) + len('args=(,) kwargs={}')} characters)"
    )
