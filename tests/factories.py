"""factory-boy factories for the domain entities (unit tests; nothing is persisted)."""

from __future__ import annotations

import factory

from domain.bar import Bar
from domain.foo import Foo, FooState


class FooFactory(factory.Factory[Foo]):
    """A foo as if loaded from storage: it has an id (pass id=None for an unsaved one)."""

    class Meta:
        model = Foo

    amount = factory.Sequence(lambda n: 10 + n)
    state = FooState.PENDING
    id = factory.Sequence(lambda n: n + 1)

    @classmethod
    def _create(cls, model_class: type[Foo], *args: object, **kwargs: object) -> Foo:
        foo_id = kwargs.pop("id")
        foo = model_class(*args, **kwargs)  # type: ignore[arg-type]
        foo.id = foo_id  # type: ignore[assignment]
        foo.version = 1
        return foo

    _build = _create


class BarFactory(factory.Factory[Bar]):
    class Meta:
        model = Bar

    weight = factory.Sequence(lambda n: 1 + n % 5)
    value = 0
