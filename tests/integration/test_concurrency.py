"""Real concurrency on PostgreSQL: threads racing on the same rows, then the invariant."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from domain import projection, use_cases
from domain.delivery import Outcome, apply_pass
from domain.errors import ConcurrentUpdateError
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.postgres


def _run_threads(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def _event_ids(container: Container) -> list[int]:
    with container.engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM outbox_events ORDER BY id")).scalars())


def test_bars_created_while_events_are_applied_end_up_right(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url))
    use_cases.create_bars(container.uow(), 2, count=50)
    foo_ids = use_cases.create_foos(container.uow(), 7, count=200)
    use_cases.complete_foos(container.uow(), foo_ids)
    event_ids = _event_ids(container)
    created: list[int] = []

    def apply_all(ids: list[int]) -> Callable[[], None]:
        return lambda: [apply_pass(container.uow(), i) for i in ids]  # type: ignore[func-returns-value]

    def create_bars() -> None:
        rng = random.Random(1)
        for _ in range(100):
            created.extend(use_cases.create_bars(container.uow(), rng.randint(0, 9)))

    _run_threads(apply_all(event_ids[::2]), apply_all(event_ids[1::2]), create_bars)

    result = projection.verify(container.uow())
    assert len(created) == 100
    assert result.bars == 150
    assert result.completed_total == 7 * 200
    assert result.mismatched == []
    container.close()


def test_concurrent_revisions_of_one_foo_are_never_miscounted(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url))
    use_cases.create_bars(container.uow(), 3, count=10)
    (foo_id,) = use_cases.create_foos(container.uow(), 10)
    use_cases.complete_foo(container.uow(), foo_id)
    refused: list[int] = []

    def revise(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            for _ in range(25):
                try:
                    use_cases.revise_foo(container.uow(), foo_id, rng.randint(0, 1000))
                except ConcurrentUpdateError:
                    refused.append(seed)

        return run

    _run_threads(*(revise(seed) for seed in range(4)))
    for event_id in _event_ids(container):
        assert apply_pass(container.uow(), event_id) is Outcome.APPLIED

    result = projection.verify(container.uow())
    assert result.mismatched == []
    with container.engine.connect() as connection:
        amount, version = connection.execute(
            text("SELECT amount, version FROM foos WHERE id = :id"), {"id": foo_id}
        ).one()
    assert result.completed_total == amount
    assert version > 2  # the revisions really went through, one after another
    container.close()


def test_two_deliveries_of_one_event_at_once_apply_it_once(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url))
    use_cases.create_bars(container.uow(), 1, count=5)
    (foo_id,) = use_cases.create_foos(container.uow(), 40)
    use_cases.complete_foo(container.uow(), foo_id)
    (event_id,) = _event_ids(container)
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(apply_pass(container.uow(), event_id))

    _run_threads(*([deliver] * 4))
    assert sorted(outcomes) == sorted([Outcome.APPLIED] + [Outcome.ALREADY_APPLIED] * 3)
    assert projection.verify(container.uow()).holds
    container.close()
