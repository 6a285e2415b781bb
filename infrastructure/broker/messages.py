"""The recalculation message: Celery task `recalculate_bars` with one argument, an event id."""

from __future__ import annotations

import logging
from typing import Any

from domain.numbers import is_whole_number_between
from infrastructure.limits import BIGINT_MAX

logger = logging.getLogger(__name__)
LOGGED_CHARS = 200  # a malformed message can be megabytes; the log line stays short


def event_id_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The one positive integer a well-formed message carries, or None."""
    values = list(args) + list(kwargs.values())
    if len(values) != 1 or set(kwargs) - {"event_id"}:
        return None
    (value,) = values
    return value if is_whole_number_between(value, 1, BIGINT_MAX) else None


def event_id_or_drop(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The message's event id; a malformed message is logged, shortened, and dropped."""
    event_id = event_id_of(args, kwargs)
    if event_id is None:
        logger.error("recalculate_bars: dropped a malformed message %s", shown(args, kwargs))
    return event_id


def shown(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A message's arguments for a log line, shortened: a garbage message may be huge."""
    text = f"args={args!r} kwargs={kwargs!r}"
    if len(text) > LOGGED_CHARS:
        text = f"{text[:LOGGED_CHARS]}... ({len(text)} characters)"
    return text
