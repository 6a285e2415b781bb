"""The contenders: how each one's workers start and stop, and where its events are read back.

All of them apply the same delta to the same 100 bars for the same stream of completed foos,
on the same PostgreSQL server (a database each) and RabbitMQ (the run's vhost)."""

from bench.contenders.bare_celery import CeleryContender, ceiling, direct
from bench.contenders.base import Contender, invariant
from bench.contenders.job_queue import Procrastinate, procrastinate
from bench.contenders.naive import NaiveTimer, naive
from bench.contenders.postsave import Postsave, postsave_embedded, postsave_pg

__all__ = [
    "CeleryContender",
    "Contender",
    "NaiveTimer",
    "Postsave",
    "Procrastinate",
    "ceiling",
    "direct",
    "invariant",
    "naive",
    "postsave_embedded",
    "postsave_pg",
    "procrastinate",
]
