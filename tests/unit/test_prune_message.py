"""The prune task takes no arguments: a message with some is logged and dropped, before any
database is opened."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.prune import prune_outbox


@pytest.mark.parametrize(
    ("args", "kwargs"), [((1,), {}), ((), {"older_than": "7d"}), (("x" * 10,), {"y": None})]
)
def test_a_prune_message_with_arguments_is_dropped_and_logged(
    args: tuple[Any, ...], kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="tasks.prune"):
        assert prune_outbox(*args, **kwargs) == 0

    assert [record.getMessage() for record in caplog.records] == [
        f"prune: dropped a message with arguments, args={args!r} kwargs={kwargs!r}; it takes none"
    ]
