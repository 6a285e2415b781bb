"""What the application does to foos and bars. Each use case is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from domain.bar import Bar, validate_weight
from domain.errors import ConcurrentUpdateError, DomainError
from domain.foo import Foo, validate_amount
from domain.numbers import is_whole_number
from domain.ports import UnitOfWork

T = TypeVar("T")
CONFLICT_RETRIES = 5
BATCH_SIZE = 1_000  # rows per transaction when creating many: bounded time, memory and locks


def _retry_on_conflict(attempt: Callable[[], T]) -> T:
    """Re-run a whole transaction that lost an optimistic-concurrency race."""
    for _ in range(CONFLICT_RETRIES - 1):
        try:
            return attempt()
        except ConcurrentUpdateError:
            continue
    return attempt()


def _require_count(count: int) -> int:
    if not is_whole_number(count) or count < 1:
        raise DomainError(f"count must be a whole number >= 1, got {count!r}")
    return count


def create_foos(uow: UnitOfWork, amount: int, count: int = 1) -> list[int]:
    validate_amount(amount)
    with uow:
        foos = [Foo(amount) for _ in range(_require_count(count))]
        for foo in foos:
            uow.foos.add(foo)
        uow.commit()
        return [foo.id for foo in foos if foo.id is not None]


def _in_batches(
    create: Callable[[int], list[int]], count: int, batch_size: int
) -> Iterator[list[int]]:
    _require_count(count)  # checked at the call, before any batch
    _require_count(batch_size)
    return (create(min(batch_size, count - start)) for start in range(0, count, batch_size))


def create_foos_in_batches(
    uow: UnitOfWork, amount: int, count: int, batch_size: int = BATCH_SIZE
) -> Iterator[list[int]]:
    """`count` pending foos, one transaction per `batch_size`; yields each batch's ids once it
    is committed. Not all or nothing: if a batch fails, the batches yielded before it stay."""
    validate_amount(amount)
    return _in_batches(lambda n: create_foos(uow, amount, n), count, batch_size)


def _change_foos(
    uow: UnitOfWork, foo_ids: Sequence[int], change: Callable[[Foo], None]
) -> list[int]:
    """Apply one change to several foos, all or nothing; returns their ids, each once."""
    unique_ids = list(dict.fromkeys(foo_ids))

    def attempt() -> None:
        with uow:
            for foo_id in unique_ids:
                change(uow.foos.get(foo_id))
            uow.commit()

    _retry_on_conflict(attempt)
    return unique_ids


def complete_foos(uow: UnitOfWork, foo_ids: Sequence[int]) -> list[int]:
    return _change_foos(uow, foo_ids, Foo.complete)


def cancel_foos(uow: UnitOfWork, foo_ids: Sequence[int]) -> list[int]:
    return _change_foos(uow, foo_ids, Foo.cancel)


def revise_foo(uow: UnitOfWork, foo_id: int, amount: int) -> list[int]:
    validate_amount(amount)
    return _change_foos(uow, [foo_id], lambda foo: foo.revise(amount))


def complete_foo(uow: UnitOfWork, foo_id: int) -> None:
    complete_foos(uow, [foo_id])


def cancel_foo(uow: UnitOfWork, foo_id: int) -> None:
    cancel_foos(uow, [foo_id])


def create_bars(uow: UnitOfWork, weight: int, count: int = 1) -> list[int]:
    """New bars join the last part while it has room (else a new part, at the head), locked
    meanwhile: creation waits at most for that part's pass. A new bar starts as of its part's
    position, from the deltas the part has applied (the example's start: `weight` times their
    sum), and then gets exactly the events after that position, like the bars beside it.
    Parts hold `uow.part_size` bars (POSTSAVE_PART_SIZE)."""
    validate_weight(weight)
    _require_count(count)
    part_size = uow.part_size
    with uow:
        uow.parts.adopt(uow.recalculation)  # the first bars: computed with the setting's
        ids: list[int] = []
        while len(ids) < count:
            part = uow.parts.lock_open(part_size)
            room = min(count - len(ids), max(part_size - part.bars, 1))
            for _ in range(room):
                bar = Bar(weight, value=weight * part.applied_total)
                uow.bars.add(bar, part)
                assert bar.id is not None
                ids.append(bar.id)
            uow.parts.added_bars(part.id, room)
        uow.commit()
        return ids


def create_bars_in_batches(
    uow: UnitOfWork, weight: int, count: int, batch_size: int = BATCH_SIZE
) -> Iterator[list[int]]:
    """`count` bars, one transaction per `batch_size`, as `create_foos_in_batches`."""
    validate_weight(weight)
    return _in_batches(lambda n: create_bars(uow, weight, n), count, batch_size)


def create_bar(uow: UnitOfWork, weight: int) -> int:
    return create_bars(uow, weight)[0]
