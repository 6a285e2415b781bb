"""Real concurrency on PostgreSQL: threads racing on the same rows, then the invariant, and
with the order-sensitive digest, each event once per bar in the one order."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from domain import use_cases
from domain.delivery import Outcome, handle_delivery
from domain.errors import ConcurrentUpdateError
from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.deliveries import apply_events, dispatch
from tests.recalculations import DIGEST, History

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


@pytest.mark.parametrize("recalculation", [EXAMPLE_RECALCULATION, DIGEST])
def test_bars_created_while_parts_are_passed_end_up_right(pg_url: str, recalculation: str) -> None:
    container = Container(
        Settings(database_url=pg_url, recalculation=recalculation, part_size=7, coalesce_limit=5)
    )
    with container.engine.begin() as connection:
        connection.execute(text(f"UPDATE bar_projection SET recalculation = '{recalculation}'"))
    history = History()
    use_cases.create_bars(container.uow(), 2, count=50)
    with container.engine.connect() as connection:
        history.record(connection)
    foo_ids = use_cases.create_foos(container.uow(), 7, count=200)
    use_cases.complete_foos(container.uow(), foo_ids)
    event_ids = _event_ids(container)
    dispatch(container, event_ids)
    created: list[int] = []

    def deliver_all(ids: list[int]) -> Callable[[], None]:
        return lambda: [handle_delivery(container.uow, i, container.heavy_step) for i in ids]  # type: ignore[func-returns-value]

    def create_bars() -> None:
        rng = random.Random(1)
        for _ in range(100):
            created.extend(use_cases.create_bars(container.uow(), rng.randint(0, 9)))
            with container.engine.connect() as connection:
                history.record(connection)  # each bar's start, before a prune could move it

    _run_threads(deliver_all(event_ids[::2]), deliver_all(event_ids[1::2]), create_bars)
    apply_events(container, _event_ids(container))  # the waiting ones' next messages

    result = container.verify()
    assert len(created) == 100
    assert result.bars == 150
    assert result.parts == 22
    assert result.completed_total == 7 * 200
    assert result.mismatched == []
    with container.engine.connect() as connection:
        if recalculation == DIGEST:
            assert history.problems(connection) == []
        states = connection.execute(text("SELECT DISTINCT state FROM outbox_events")).scalars()
        assert list(states) == ["processed"]
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
    outcomes = apply_events(container, _event_ids(container))
    assert outcomes[0] is Outcome.APPLIED  # its passes took every part through all of them
    assert set(outcomes[1:]) <= {Outcome.ALREADY_APPLIED}

    result = container.verify()
    assert result.mismatched == []
    with container.engine.connect() as connection:
        amount, version = connection.execute(
            text("SELECT amount, version FROM foos WHERE id = :id"), {"id": foo_id}
        ).one()
    assert result.completed_total == amount
    assert version > 2  # the revisions really went through, one after another
    container.close()


def test_four_deliveries_of_one_event_at_once_apply_it_once_to_every_bar(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url, recalculation=DIGEST, part_size=2))
    with container.engine.begin() as connection:
        connection.execute(text(f"UPDATE bar_projection SET recalculation = '{DIGEST}'"))
    history = History()
    use_cases.create_bars(container.uow(), 1, count=5)
    (foo_id,) = use_cases.create_foos(container.uow(), 40)
    use_cases.complete_foo(container.uow(), foo_id)
    (event_id,) = _event_ids(container)
    dispatch(container, [event_id])
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(handle_delivery(container.uow, event_id, container.heavy_step))

    _run_threads(*([deliver] * 4))
    # Each delivery passed the parts it could take, then waited for the passes the others
    # had under way, and found the event applied by every part: none is left waiting.
    assert Outcome.APPLIED in outcomes
    assert set(outcomes) <= {Outcome.APPLIED, Outcome.ALREADY_APPLIED}
    with container.engine.connect() as connection:
        assert history.problems(connection) == []
        positions = connection.execute(text("SELECT DISTINCT position FROM bars")).scalars()
        assert list(positions) == [1]
    assert container.verify().holds
    container.close()


def _one_part_behind(pg_url: str, statement_timeout_s: float = 15.0) -> tuple[Container, int]:
    container = Container(
        Settings(database_url=pg_url, part_size=10, statement_timeout_s=statement_timeout_s)
    )
    use_cases.create_bars(container.uow(), 1, count=3)
    (foo_id,) = use_cases.create_foos(container.uow(), 5)
    use_cases.complete_foo(container.uow(), foo_id)
    dispatch(container, _event_ids(container))
    with container.uow() as uow:
        head = uow.parts.projection().head
    return container, head


def _wait_in_a_thread(container: Container, head: int) -> tuple[threading.Thread, list[int]]:
    behind: list[int] = []

    def wait() -> None:
        with container.uow() as waiter:
            behind.append(waiter.parts.wait_for_passes(head))

    waiting = threading.Thread(target=wait)
    waiting.start()
    waiting.join(0.5)
    return waiting, behind


@pytest.mark.parametrize("passed", [True, False])
def test_a_delivery_waits_for_the_pass_holding_a_part_then_reads_the_part_again(
    pg_url: str, passed: bool
) -> None:
    container, head = _one_part_behind(pg_url)
    with container.uow() as holder:
        part = holder.parts.claim(head)
        assert part is not None  # a pass holds the part from here on
        waiting, behind = _wait_in_a_thread(container, head)
        assert waiting.is_alive()  # it waits for the pass
        if passed:
            holder.parts.advance(part.id, head, 5)
            holder.commit()
    waiting.join(30)
    # Passed: nothing is behind any more. Given up (a failed pass): the part is still behind.
    assert behind == [0 if passed else 1]
    container.close()


def test_a_wait_for_a_pass_is_bounded_by_the_statement_timeout(pg_url: str) -> None:
    container, head = _one_part_behind(pg_url, statement_timeout_s=0.3)
    with container.uow() as holder:
        assert holder.parts.claim(head) is not None
        waiting, behind = _wait_in_a_thread(container, head)
        waiting.join(30)
        assert behind == [0]  # gave up waiting: its delivery settles for now
    container.close()
