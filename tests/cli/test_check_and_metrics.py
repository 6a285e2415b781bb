"""`postsave check` and `postsave metrics`: what an orchestrator and Prometheus read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from kombu import Connection, Consumer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from domain import operations, retention, use_cases
from domain.backoff import RetryPolicy
from domain.delivery import handle_delivery
from domain.outbox import RelayLimits
from domain.passes import HeavyStep
from domain.recalculation import EXAMPLE_RECALCULATION, recalculate
from domain.relay import relay_once
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.queues import declare_queues, task_queues
from infrastructure.cli.main import main
from infrastructure.memory import InMemoryDispatcher
from infrastructure.ops import metrics
from infrastructure.settings import Settings
from infrastructure.sql.migrate import alembic_config, downgrade
from tests import services
from tests.cli.conftest import Result, Run, event_ids, execute, run_in_process, snapshot
from tests.cli.test_cli import assert_one_line_error

SCRIPTS = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = SCRIPTS.get_current_head()
BEFORE_HEAD = SCRIPTS.get_revision(HEAD).down_revision
# 100 seconds before now, by the database's clock, as each stores a timestamp.
AGO_100_S = {
    "postgresql": "clock_timestamp() - interval '100 seconds'",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now', '-100 seconds')",
}


def relay_pass(container: Container) -> None:
    relay_once(container.uow(), InMemoryDispatcher(), RelayLimits())


def lines(text: str) -> list[str]:
    return text.splitlines()


# --- check --------------------------------------------------------------------------------------


@pytest.fixture
def checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pg_url: str
) -> Iterator[tuple[Run, Container]]:
    """`postsave check` on a migrated PostgreSQL database and a RabbitMQ vhost of its own,
    whose queues have a consumer each, as a running worker's do."""
    services.check_rabbitmq()
    vhost = services.create_vhost()
    assert vhost is not None, "rabbitmqctl is needed for a vhost of the test's own"
    amqp_url = services.amqp_url_for(vhost)
    monkeypatch.setenv("POSTSAVE_BROKER_URL", amqp_url)
    container = Container(Settings(database_url=pg_url, broker_url=amqp_url))

    def run(*argv: str) -> Result:
        return run_in_process(monkeypatch, capsys, pg_url, ["check", *argv])

    try:
        with consuming(amqp_url, [RECALC_QUEUE, POLL_QUEUE]):
            yield run, container
    finally:
        container.close()
        services.delete_vhost(vhost)


@contextmanager
def consuming(amqp_url: str, queues: Sequence[str]) -> Iterator[None]:
    """A consumer on each of postsave's queues (declared as a worker declares them), taking
    nothing off them: what the broker counts for a worker."""
    with Connection(amqp_url, connect_timeout=5) as connection:
        channel = connection.channel()
        declare_queues(channel, task_queues())
        declared = [queue for queue in task_queues() if queue.name in queues]
        with Consumer(channel, declared, callbacks=[], prefetch_count=1):
            yield


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_check_passes_with_the_database_at_head_the_broker_answering_and_a_recent_relay_pass(
    checked: tuple[Run, Container],
) -> None:
    run, container = checked
    relay_pass(container)

    result = run()

    assert result.code == 0, result
    assert result.err == ""
    [database, relay, broker, consumers] = lines(result.out)
    assert database.startswith("database: ok, postgresql+psycopg://")
    assert database.endswith(f"at the latest revision ({HEAD})")
    assert relay.startswith("relay: ok, last batch ")
    assert broker == f"broker: ok, {broker_shown()} answered"
    assert consumers == "consumers: ok, postsave.recalc 1, postsave.poll 1"


def broker_shown() -> str:
    """The test's broker URL as check shows it: its password hidden."""
    return os.environ["POSTSAVE_BROKER_URL"].replace(":guest@", ":***@")


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("queues", "idle"),
    [
        ([POLL_QUEUE], "postsave.recalc (postsave.recalc 0, postsave.poll 1)"),
        ([RECALC_QUEUE], "postsave.poll (postsave.recalc 1, postsave.poll 0)"),
        ([], "postsave.recalc or postsave.poll (postsave.recalc 0, postsave.poll 0)"),
    ],
)
def test_check_fails_naming_each_queue_no_worker_consumes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
    queues: list[str],
    idle: str,
) -> None:
    """A worker whose consumer was cancelled still answers, and the relay may still run on
    another: the broker's count of each queue's consumers is what shows it."""
    services.check_rabbitmq()
    vhost = services.create_vhost()
    assert vhost is not None, "rabbitmqctl is needed for a vhost of the test's own"
    monkeypatch.setenv("POSTSAVE_BROKER_URL", services.amqp_url_for(vhost))
    container = Container(Settings(database_url=pg_url))
    try:
        relay_pass(container)
        with consuming(services.amqp_url_for(vhost), queues):
            result = run_in_process(monkeypatch, capsys, pg_url, ["check"])
    finally:
        container.close()
        services.delete_vhost(vhost)

    assert result.code == 1
    assert lines(result.err) == [
        f"consumers: no worker consumes {idle}; start one (celery -A tasks worker), "
        "or `celery -A tasks control add_consumer QUEUE`"
    ]
    assert len(lines(result.out)) == 3  # the database, the relay and the broker are fine


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_check_fails_naming_the_relay_when_its_last_pass_is_too_old(
    checked: tuple[Run, Container],
) -> None:
    run, container = checked
    assert lines(run().err) == [
        "relay: no relay batch has run yet; start beat and the relay worker"
    ]
    relay_pass(container)
    execute(
        container.engine,
        "UPDATE outbox_counters SET last_relay_pass_at = now() - interval '42.2 seconds'",
    )

    result = run()

    assert result.code == 1
    assert lines(result.err) == [
        "relay: last batch 42 s ago (more than 10 s); is beat running, and a worker consuming "
        "postsave.poll?"
    ]
    assert run("--max-relay-age", "60").code == 0


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_check_fails_naming_the_database_when_it_is_not_at_the_latest_revision(
    checked: tuple[Run, Container], pg_url: str
) -> None:
    run, container = checked
    relay_pass(container)
    downgrade(pg_url, str(BEFORE_HEAD))

    result = run()

    assert result.code == 1
    assert lines(result.err) == [
        f"database: at revision {BEFORE_HEAD}, not the latest ({HEAD}); run `postsave migrate`",
        "relay: unknown: not migrated",
    ]
    assert lines(result.out) == [
        f"broker: ok, {broker_shown()} answered",
        "consumers: ok, postsave.recalc 1, postsave.poll 1",
    ]


@pytest.mark.postgres
def test_check_fails_naming_the_broker_without_printing_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    services.check_rabbitmq()
    monkeypatch.setenv("POSTSAVE_BROKER_URL", "amqp://guest:not-the-password@127.0.0.1:5672//")

    result = run_in_process(monkeypatch, capsys, pg_url, ["check"])

    assert result.code == 1
    [relay, broker, consumers] = lines(result.err)
    assert relay.startswith("relay: no relay batch")
    assert broker.startswith("broker: amqp://guest:***@127.0.0.1:5672//: ")
    assert "ACCESS_REFUSED" in broker
    assert consumers.startswith("consumers: unknown: ") and "ACCESS_REFUSED" in consumers
    assert "not-the-password" not in result.out + result.err


class Silent:
    """A TCP server that accepts connections and never says a word: a host that hangs."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


def test_check_answers_within_its_timeout_when_the_hosts_accept_and_never_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database, broker = Silent(), Silent()
    monkeypatch.setenv("POSTSAVE_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{broker.port}//")
    url = f"postgresql+psycopg://postsave@127.0.0.1:{database.port}/postsave"
    try:
        started = time.monotonic()
        result = run_in_process(monkeypatch, capsys, url, ["check", "--timeout", "2"])
        elapsed = time.monotonic() - started
        assert database.accepted and broker.accepted  # both were tried: the waits were real
    finally:
        database.close()
        broker.close()

    assert result.code == 1
    [database_line, relay_line, broker_line, consumers_line] = lines(result.err)
    assert database_line.startswith(
        f"database: postgresql+psycopg://postsave@127.0.0.1:{database.port}"
    )
    assert relay_line.startswith("relay: unknown")
    assert broker_line.startswith(f"broker: amqp://guest:***@127.0.0.1:{broker.port}//")
    assert consumers_line.startswith("consumers: unknown: ")
    assert elapsed < 2 * (2 + 1) + 2  # each check's deadline, side by side, with slack


def test_check_on_a_missing_database_file_names_each_check_and_creates_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capsys.readouterr()
    code = main(["check"])
    out, err = capsys.readouterr()

    assert (code, out) == (1, "")
    assert lines(err) == [
        "database: database file var/postsave.db does not exist; run `postsave migrate` first "
        "(or fix POSTSAVE_DATABASE_URL)",
        "relay: unknown: the database is missing",
        "broker: sqla+sqlite:///var/broker.db: no such file; start a worker first",
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["check", "--max-relay-age", "0"], "'0' is not a number of seconds greater than 0"),
        (["check", "--timeout", "soon"], "'soon' is not a number of seconds greater than 0"),
        (["metrics"], "the following arguments are required: --port"),
        (["metrics", "--port", "70000"], "'70000' is not a port (1 to 65535)"),
    ],
)
def test_wrong_check_and_metrics_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    result = Result(code, out, err)

    assert_one_line_error(result, code=2)
    assert problem in err


# --- metrics ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics, by name and labels: `name{label="value"}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@pytest.fixture
def exporter(container: Container) -> Iterator[int]:
    """The exporter `postsave metrics` serves, on a port of its own."""
    port = free_port()
    serving = metrics.Exporter(container.uow, "127.0.0.1", port)
    yield port
    serving.stop()


def failing_for(bar_id: int) -> HeavyStep:
    """The example's recalculation, but it raises on one bar: its part backs off for 5 to 10
    minutes after its first failure, and dies at its second."""

    def recalculate_unless(bar: Any, events: Sequence[Any]) -> None:
        if bar.id == bar_id:
            raise RuntimeError(f"bar {bar_id} is broken")
        recalculate(bar, events)

    retry = RetryPolicy(max_attempts=2, base_delay_s=600, max_delay_s=600)
    return HeavyStep(recalculate_unless, EXAMPLE_RECALCULATION, retry=retry)


def test_metrics_serve_the_outbox_and_the_parts_from_the_database(
    exporter: int, container: Container, db: Engine
) -> None:
    before = scrape(exporter)
    assert before["postsave_database_up"] == 1
    assert before["postsave_relay_last_pass_age_seconds"] == float("inf")
    assert before['postsave_outbox_events{state="pending"}'] == 0
    assert before["postsave_projection_lag_seconds"] == 0
    assert before['postsave_parts{state="ready"}'] == before['postsave_parts{state="dead"}'] == 0
    assert before['postsave_parts{state="backing_off"}'] == 0

    container.settings = replace(container.settings, part_size=1)
    [broken, *_] = use_cases.create_bars(container.uow(), 2, 3)  # parts 1, 2 and 3
    foos = use_cases.create_foos_in_batches(container.uow(), 5, 4)
    use_cases.complete_foos(container.uow(), [foo for batch in foos for foo in batch])
    execute(db, "INSERT INTO outbox_events (event_type, payload) VALUES ('FooCompleted', '{}')")
    execute(db, f"UPDATE outbox_events SET occurred_at = {AGO_100_S[db.dialect.name]}")
    relay_pass(container)  # four dispatched; the unreadable one is dead at once
    [first, *others, unreadable] = event_ids(db)
    # Part 1 fails and backs off; parts 2 and 3 apply all four, which wait for part 1.
    handle_delivery(container.uow, first, failing_for(broken))
    backing_off = scrape(exporter)
    assert backing_off['postsave_parts{state="ready"}'] == 2
    assert backing_off['postsave_parts{state="backing_off"}'] == 1
    assert backing_off['postsave_parts{state="dead"}'] == 0
    # Its backoff over, part 1 fails again and dies.
    execute(db, f"UPDATE bar_parts SET available_at = {AGO_100_S[db.dialect.name]}")
    handle_delivery(container.uow, first, failing_for(broken))

    after = scrape(exporter)

    assert after['postsave_outbox_events{state="pending"}'] == 1  # the first, back to wait
    assert after['postsave_outbox_events{state="in_flight"}'] == 3
    assert after['postsave_outbox_events{state="dead"}'] == 1
    assert 100 <= after["postsave_outbox_oldest_pending_age_seconds"] < 160
    assert 100 <= after["postsave_projection_lag_seconds"] < 160
    assert after['postsave_parts{state="ready"}'] == 2
    assert after['postsave_parts{state="backing_off"}'] == 0
    assert after['postsave_parts{state="dead"}'] == 1
    assert (after["postsave_parts_behind"], after["postsave_parts_rebuilding"]) == (1, 0)
    assert after["postsave_events_applied_total"] == 0
    assert after["postsave_event_failures_total"] == 1  # the unreadable event's
    assert after["postsave_events_dead_total"] == 1
    assert after["postsave_events_dispatched_total"] == 4
    assert after["postsave_relay_passes_total"] == 1
    assert 0 <= after["postsave_relay_last_pass_age_seconds"] < 60
    assert after["postsave_events_pruned_total"] == 0

    assert operations.retry_dead_parts(container.uow()) == [1]
    for event_id in [first, *others]:
        handle_delivery(container.uow, event_id, container.heavy_step)
    caught_up = scrape(exporter)
    assert caught_up['postsave_parts{state="dead"}'] == caught_up["postsave_parts_behind"] == 0
    assert caught_up["postsave_projection_lag_seconds"] == 0
    assert caught_up["postsave_events_applied_total"] == 4
    assert caught_up['postsave_outbox_events{state="in_flight"}'] == 0
    assert caught_up['postsave_outbox_events{state="dead"}'] == 1  # the unreadable one
    assert unreadable > first

    assert retention.prune(container.uow, older_than_s=0).pruned == 4
    assert scrape(exporter)["postsave_events_pruned_total"] == 4


def test_metrics_say_the_database_is_unreadable_and_keep_serving(exporter: int, db: Engine) -> None:
    execute(db, "DROP TABLE outbox_counters")

    broken = scrape(exporter)

    assert broken == {"postsave_database_up": 0}


def test_metrics_on_a_port_in_use_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_in_process(monkeypatch, capsys, sqlite_url, ["metrics", "--port", str(port)])

    assert_one_line_error(result, code=1)
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in result.err


def test_reading_commands_leave_the_counters_alone(cli: Run, db: Engine) -> None:
    before = snapshot(db)
    for argv in (["status"], ["verify"], ["dead", "list"], ["check", "--timeout", "1"]):
        cli(*argv)
    assert snapshot(db) == before


def test_the_metrics_command_serves_until_stopped(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "POSTSAVE_DATABASE_URL": sqlite_url}
    command = [str(Path(sys.executable).parent / "postsave"), "metrics", "--port", str(port)]
    with subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            ready = p.stdout.readline()
            assert ready == f"serving Prometheus metrics on http://127.0.0.1:{port}/metrics\n"
            samples = scrape(port)
        finally:
            p.terminate()
    assert samples["postsave_database_up"] == 1
    assert samples['postsave_outbox_events{state="dead"}'] == 0
