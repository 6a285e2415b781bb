"""postsave's queues, classic or quorum; a declaration RabbitMQ refuses, said with what to do."""

from __future__ import annotations

from amqp.exceptions import PreconditionFailed

from infrastructure.broker.celery_app import celery_config
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.queues import QUORUM_DELIVERY_LIMIT, mismatch, task_queues
from infrastructure.settings import Settings


def arguments(queue_type: str) -> dict[str, object]:
    return {queue.name: queue.queue_arguments for queue in task_queues(queue_type)}


def test_classic_queues_are_declared_as_before() -> None:
    assert arguments("classic") == {
        POLL_QUEUE: {"x-max-length": 1, "x-overflow": "drop-head"},
        RECALC_QUEUE: None,
    }


def test_quorum_queues_keep_the_same_semantics_and_state_their_delivery_limit() -> None:
    quorum = {"x-queue-type": "quorum", "x-delivery-limit": QUORUM_DELIVERY_LIMIT}
    assert arguments("quorum") == {
        POLL_QUEUE: {**quorum, "x-max-length": 1, "x-overflow": "drop-head"},
        RECALC_QUEUE: quorum,
    }


def test_the_worker_leaves_out_celerys_delayed_delivery_queues() -> None:
    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", queue_type="quorum")
    config = celery_config(settings)
    assert config["worker_consumer"] == "infrastructure.broker.consumer:Consumer"
    from infrastructure.broker.consumer import DELAYED_DELIVERY, Consumer

    assert DELAYED_DELIVERY not in Consumer.Blueprint.default_steps
    assert "celery.worker.consumer.tasks:Tasks" in Consumer.Blueprint.default_steps
    assert [q.queue_arguments["x-queue-type"] for q in config["task_queues"]] == ["quorum"] * 2


def test_a_queue_of_another_type_is_said_in_one_line_with_what_to_do() -> None:
    # RabbitMQ 3.10's words, for a classic queue declared again as a quorum queue.
    refused = PreconditionFailed(
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'postsave.recalc' in "
        "vhost 'postsave': received the value 'quorum' of type 'longstr' but current is none"
    )

    message = str(mismatch(refused, "quorum"))

    assert "\n" not in message
    assert message.startswith(
        "queue postsave.recalc exists as a classic queue, but POSTSAVE_QUEUE_TYPE=quorum "
        "declares a quorum one: set POSTSAVE_QUEUE_TYPE to the type it has, or delete "
        "postsave's queues with every worker stopped and the queues empty"
    )


def test_a_quorum_queue_declared_as_classic_and_another_argument_are_said_too() -> None:
    back = PreconditionFailed(
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'postsave.poll' in "
        "vhost '/': received none but current is the value 'quorum' of type 'longstr'"
    )
    limit = PreconditionFailed(
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'postsave.recalc' "
        "in vhost '/': received the value '20' of type 'signedint' but current is the value "
        "'10' of type 'signedint'"
    )

    assert str(mismatch(back, "classic")).startswith(
        "queue postsave.poll exists as a quorum queue, but POSTSAVE_QUEUE_TYPE=classic "
        "declares a classic one: "
    )
    assert str(mismatch(limit, "quorum")).startswith(
        "queue postsave.recalc exists with x-delivery-limit 10, but POSTSAVE_QUEUE_TYPE=quorum "
        "declares x-delivery-limit 20: "
    )


def test_another_refusal_is_passed_on_as_the_broker_said_it() -> None:
    message = str(mismatch(PreconditionFailed("PRECONDITION_FAILED - something else"), "classic"))
    assert message == (
        "the broker refused to declare postsave's queues: PRECONDITION_FAILED - something else"
    )
