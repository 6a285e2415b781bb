"""In-memory adapters of every port, held to the same contract suite as the SQL ones.

An application's own unit tests can run the use cases on them, without a database:

    from infrastructure.memory import InMemoryUnitOfWork
    uow = InMemoryUnitOfWork()
    foo_id = use_cases.create_foo(uow, amount=5)

An `InMemoryDatabase` is the committed state. Each `with uow:` works on a deep copy of it (the
transaction); `commit()` makes that copy the committed state, anything else discards it.
"""

from infrastructure.memory.clock import ManualClock
from infrastructure.memory.dispatcher import InMemoryDispatcher
from infrastructure.memory.tables import InMemoryDatabase, OutboxRow
from infrastructure.memory.unit_of_work import InMemoryUnitOfWork

__all__ = [
    "InMemoryDatabase",
    "InMemoryDispatcher",
    "InMemoryUnitOfWork",
    "ManualClock",
    "OutboxRow",
]
