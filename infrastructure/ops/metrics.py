"""`postsave metrics`: a Prometheus exporter. Every value is read from the database at scrape
time, so one exporter is right for a whole fleet of workers and survives restarts; a scrape
reads the unfinished events' indexes, the counters and the parts, never the event log."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from domain import operations
from domain.operations import Health
from domain.parts import PartStats
from domain.ports import UnitOfWork
from infrastructure.ops.web_config import BasicAuth, WebConfig

logger = logging.getLogger(__name__)


class OutboxCollector(Collector):
    def __init__(self, uow_factory: Callable[[], UnitOfWork]) -> None:
        self.uow_factory = uow_factory

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            health = operations.health(self.uow_factory())
        except SQLAlchemyError as error:
            detail = (str(getattr(error, "orig", None) or error).strip().splitlines() or ["?"])[0]
            logger.error("metrics: cannot read the database: %s", detail)
            yield _gauge("database_up", "1 if this scrape could read the database, else 0", 0)
            return
        yield _gauge("database_up", "1 if this scrape could read the database, else 0", 1)
        yield from outbox_metrics(health)
        yield _gauge(
            "scrape_duration_seconds",
            "How long reading the database took for this scrape",
            time.perf_counter() - started,
        )


def outbox_metrics(both: Health) -> Iterator[Metric]:
    health = both.events
    events = GaugeMetricFamily(
        "postsave_outbox_events",
        "Events by state: pending (waiting for the relay), in_flight (dispatched, not applied "
        "yet), dead (failed too often; `postsave dead retry` makes them due again)",
        labels=["state"],
    )
    events.add_metric(["pending"], health.pending)
    events.add_metric(["in_flight"], health.in_flight)
    events.add_metric(["dead"], health.dead)
    yield events
    yield _gauge(
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest event not applied yet (pending or in flight); 0 when none waits",
        health.oldest_pending_age_s,
    )
    yield _gauge(
        "projection_lag_seconds",
        "Age of the oldest unfinished event not applied yet (some part has not passed it): "
        "how far the bars are behind the foos; 0 when none is",
        health.projection_lag_s,
    )
    yield from part_metrics(both.parts, both.parts_backing_off)
    last_pass = health.last_relay_pass_age_s
    yield _gauge(
        "relay_last_pass_age_seconds",
        "Seconds since the relay last committed a batch (idle ones too), by the database's "
        "clock; +Inf before the first",
        math.inf if last_pass is None else last_pass,
    )
    counters = {
        "events_applied": ("Events whose delta is on the bars", health.events_applied),
        "event_failures": (
            "Events the relay could not read, made dead before they had a place in the order",
            health.event_failures,
        ),
        "part_failures": (
            "Failed passes over a part (the recalculation or the database raised), retried or dead",
            health.part_failures,
        ),
        "events_dead": ("Events that failed too often and became dead", health.events_dead),
        "events_dispatched": ("Messages the relay published", health.events_dispatched),
        "leases_expired": (
            "Events dispatched again because their lease ended before their own message came back "
            "(expired unconsumed or lost); another delivery's pass may have applied them already",
            health.leases_expired,
        ),
        "relay_passes": (
            "Relay batches committed (a transaction: claim, publish, lease), idle ones included",
            health.relay_passes,
        ),
        "events_pruned": (
            "Finished events folded into the checkpoint and deleted from the log",
            health.events_pruned,
        ),
    }
    for name, (help_text, value) in counters.items():
        yield CounterMetricFamily(f"postsave_{name}", help_text, value=value)


def part_metrics(stats: PartStats, backing_off: int) -> Iterator[Metric]:
    parts = GaugeMetricFamily(
        "postsave_parts",
        "Parts of the bars by state: ready (passes take it when it is behind), backing_off "
        "(a pass failed; tried again after a backoff), dead (failed too often; every event "
        "after its position waits for `postsave dead retry --part`)",
        labels=["state"],
    )
    parts.add_metric(["ready"], stats.parts - backing_off - stats.dead)
    parts.add_metric(["backing_off"], backing_off)
    parts.add_metric(["dead"], stats.dead)
    yield parts
    yield _gauge(
        "parts_behind",
        "Parts whose position is below the head: events wait for them (dead ones included)",
        stats.behind,
    )
    yield _gauge(
        "parts_rebuilding",
        "Parts that `postsave rebuild` has sent back to their baselines and not yet passed",
        stats.rebuilding,
    )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"postsave_{name}", help_text, value=value)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


class _Server(ThreadingWSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up or spoke plain HTTP to TLS: its own thread's problem, not a
        traceback in the log."""
        logger.debug("metrics: a request from %s failed", client_address, exc_info=True)


class Exporter:
    """Serves /metrics from a thread of its own, with TLS and basic auth as `web` says (the
    exporters' web configuration file). OSError if the address cannot be listened on."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        host: str,
        port: int,
        web: WebConfig | None = None,
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(OutboxCollector(uow_factory))
        web = web or WebConfig()
        app = make_wsgi_app(registry)
        if web.users:
            app = BasicAuth(app, web.users)
        self._server = make_server(host, port, app, _Server, _QuietHandler)
        if web.tls is not None:
            # The handshake in the request's own thread: a client that connects and says
            # nothing must not hold the thread that accepts connections.
            self._server.socket = web.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the server stops (or the process is interrupted)."""
        try:
            self._thread.join()
        finally:
            self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
