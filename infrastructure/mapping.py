"""Imperative mapping: the domain classes stay plain; SQLAlchemy learns them from here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import registry

from domain.bar import Bar
from domain.foo import Foo
from infrastructure.schema import bars, foos, metadata

mapper_registry = registry(metadata=metadata)
_mapped = False


def _init_loaded_foo(foo: Foo, _context: Any) -> None:
    # The ORM does not call __init__ on load; give the foo its own event list.
    foo.events = []


def map_domain() -> None:
    """Map Foo and Bar once per process; foos carry a version for optimistic concurrency."""
    global _mapped
    if _mapped:
        return
    foo_mapper = mapper_registry.map_imperatively(
        Foo, foos, version_id_col=foos.c.version, exclude_properties=["created_at"]
    )
    mapper_registry.map_imperatively(Bar, bars, exclude_properties=["created_at"])
    event.listen(foo_mapper, "load", _init_loaded_foo)
    _mapped = True
