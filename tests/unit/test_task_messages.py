"""The relay's and the nudge's messages are Celery's own, copied from one template: each is what
`create_task_message` builds for it, but for its new id. No broker is needed to build them."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from infrastructure.broker.celery_app import make_celery_app
from infrastructure.broker.names import RECALC_TASK
from infrastructure.broker.publishing import TaskMessages
from infrastructure.settings import Settings


def app_for(broker_url: str) -> Celery:
    return make_celery_app(Settings(database_url="sqlite:///unused.db", broker_url=broker_url))


def celerys_own(app: Celery, task_id: str, args: tuple[Any, ...], **options: Any) -> Any:
    return app.amqp.create_task_message(task_id, RECALC_TASK, args, {}, **options)


def test_each_message_is_the_one_celery_builds_with_an_id_of_its_own() -> None:
    app = app_for("amqp://guest:guest@127.0.0.1:5672//")
    messages = TaskMessages(app, RECALC_TASK, expires_s=27.0, sent_event=True)

    built = [messages.message((event_id,)) for event_id in (5, 6, 2**40)]

    ids = [headers["id"] for headers, *_ in built]
    assert len(set(ids)) == 3
    for (headers, properties, body, fields), task_id, args in zip(
        built, ids, [(5,), (6,), (2**40,)], strict=True
    ):
        expected = celerys_own(app, task_id, args, create_sent_event=True)
        assert headers == expected.headers
        assert properties == expected.properties
        assert body == expected.body
        assert fields == expected.sent_event
    assert messages.expiry == {"expiration": 27.0}  # the broker's TTL, no time in the message


def test_arguments_that_are_not_integers_get_celerys_own_repr() -> None:
    app = app_for("amqp://guest:guest@127.0.0.1:5672//")
    messages = TaskMessages(app, RECALC_TASK, expires_s=5.0)

    headers, _, body, fields = messages.message(("x" * 2000, 1.5))

    expected = celerys_own(app, headers["id"], ("x" * 2000, 1.5))
    assert headers["argsrepr"] == expected.headers["argsrepr"]  # cut at Celery's maximum
    assert len(headers["argsrepr"]) < 2000
    assert body == expected.body
    assert fields is None  # no task-sent event asked for


def test_on_the_embedded_broker_each_message_expires_at_a_time_of_its_own() -> None:
    app = app_for("sqlite:///broker.db")
    messages = TaskMessages(app, RECALC_TASK, expires_s=27.0)

    first, _, _, _ = messages.message((5,))
    time.sleep(0.01)
    second, _, _, _ = messages.message((6,))

    assert first["expires"] is not None  # an absolute time: this broker has no TTL
    assert second["expires"] > first["expires"]  # from when it was built, not the first
    assert messages.expiry == {"expires": 27.0}
