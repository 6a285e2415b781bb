"""A worker's admission (infrastructure/broker/admission.py) on messages as Celery builds them,
serialised as they travel: postsave's own pass, whatever else a publisher sends is refused
with the reason. No broker is needed to build them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, signature
from kombu.serialization import dumps

from infrastructure.broker.admission import (
    MAX_BODY_BYTES,
    POSTSAVE_TASKS,
    ignore_time_limits,
    refusal,
)
from infrastructure.broker.celery_app import make_celery_app
from infrastructure.broker.names import POLL_TASK, PRUNE_TASK, RECALC_TASK
from infrastructure.broker.publishing import TaskMessages
from infrastructure.settings import Settings


@pytest.fixture(scope="module")
def app() -> Celery:
    settings = Settings(
        database_url="sqlite:///unused.db", broker_url="amqp://guest:guest@127.0.0.1:5672//"
    )
    return make_celery_app(settings)


def sent(
    app: Celery, name: str, args: tuple[Any, ...] = (), serializer: str = "json", **options: Any
) -> tuple[dict[str, Any], str, bytes]:
    """Headers, content type and body of the message Celery sends for these options."""
    message = app.amqp.create_task_message("an-id", name, args, {}, **options)
    content_type, _, body = dumps(message.body, serializer=serializer)
    return message.headers, content_type, body if isinstance(body, bytes) else body.encode()


def test_postsaves_own_messages_are_admitted(app: Celery) -> None:
    assert {POLL_TASK, RECALC_TASK, PRUNE_TASK} == POSTSAVE_TASKS
    for name, args in ((RECALC_TASK, (12,)), (POLL_TASK, ()), (PRUNE_TASK, ())):
        assert refusal(*sent(app, name, args)) is None
    # The relay's and the nudge's copies of Celery's messages, as they are published.
    headers, _, body, _ = TaskMessages(app, RECALC_TASK, 5.0).message((7,))
    content_type, _, data = dumps(body, serializer="json")
    assert refusal(headers, content_type, data) is None


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("celery.starmap", "task 'celery.starmap' is not one of postsave's"),
        ("celery.chord_unlock", "task 'celery.chord_unlock' is not one of postsave's"),
        ("no_such_task", "task 'no_such_task' is not one of postsave's"),
    ],
)
def test_other_tasks_are_refused_celerys_own_included(app: Celery, name: str, said: str) -> None:
    why = refusal(*sent(app, name, ([1, 2],)))
    assert why is not None and why.startswith(said)


def test_an_eta_or_a_countdown_is_refused(app: Celery) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    for options in ({"eta": later}, {"countdown": 60}):
        why = refusal(*sent(app, RECALC_TASK, (1,), **options))
        assert why is not None and why.startswith("an eta ("), options


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(app: Celery) -> None:
    headers, content_type, _ = sent(app, RECALC_TASK, (1,))
    huge = b"[" * (MAX_BODY_BYTES + 1)  # not even JSON: the size is said first
    assert refusal(headers, content_type, huge) == (
        f"a body of {MAX_BODY_BYTES + 1:,} bytes, over the limit of {MAX_BODY_BYTES:,}"
    )
    padded = sent(app, RECALC_TASK, ("x" * MAX_BODY_BYTES,))
    assert str(refusal(*padded)).startswith("a body of ")


def test_content_other_than_json_is_refused(app: Celery) -> None:
    headers, content_type, body = sent(app, RECALC_TASK, (1,), serializer="pickle")
    assert content_type == "application/x-python-serialize"
    for declared in (content_type, "application/x-yaml", None):
        assert refusal(headers, declared, body) == (
            f"content type {declared!r}: postsave takes application/json only"
        )


def test_a_messages_own_time_limits_are_admitted_and_ignored(app: Celery) -> None:
    """Celery puts the sender's limits for a task in its messages (beat's ticks carry them):
    admitted, but the worker's own limits hold."""
    headers, content_type, body = sent(app, RECALC_TASK, (1,), time_limit=1, soft_time_limit=0.5)
    assert headers["timelimit"] == [1, 0.5]  # hard, soft
    assert refusal(headers, content_type, body) is None

    ignore_time_limits(headers)

    assert headers["timelimit"] == [None, None]  # Celery then takes the task's own
    no_limits = {"task": RECALC_TASK}
    ignore_time_limits(no_limits)
    assert no_limits == {"task": RECALC_TASK}


def test_links_to_other_tasks_are_refused(app: Celery) -> None:
    link = signature(RECALC_TASK, args=(2,), app=app)
    for options, said in (
        ({"callbacks": [link]}, "callbacks"),
        ({"errbacks": [link]}, "errbacks"),
        ({"chain": [link]}, "chain"),
        ({"chord": link}, "chord"),
    ):
        assert refusal(*sent(app, RECALC_TASK, (1,), **options)) == (
            f"it links other tasks ({said})"
        )


def test_messages_that_are_not_celerys_protocol_2_are_refused(app: Celery) -> None:
    headers, content_type, body = sent(app, RECALC_TASK, (1,))
    no_task = "not a Celery task message of protocol 2 (no task header)"
    assert refusal({}, content_type, body) == no_task
    assert refusal(None, content_type, body) == no_task
    assert refusal(headers, content_type, b"\x80\x04not json") == "the body is not JSON"
    assert refusal(headers, content_type, b'{"args": [1]}') == (
        "the body is not Celery's [args, kwargs, options]"
    )


def test_what_a_publisher_controls_is_said_briefly(app: Celery) -> None:
    headers, content_type, body = sent(app, "x" * 10_000, (1,))
    why = refusal(headers, content_type, body)
    assert why is not None and len(why) < 200 and "..." in why
