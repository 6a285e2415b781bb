"""A RabbitMQ user per component, with exactly the permissions `postsave broker-users` prints:
the relay worker, a recalculation worker, beat, the application's nudge and `postsave check`
each connect as their own, and the pipeline runs; the application's user can publish a tick
and nothing else; a worker whose user may not declare what it needs stops with one line."""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from amqp import Message
from amqp.exceptions import AccessRefused
from kombu import Connection

from domain import operations, use_cases
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.permissions import BROKER_USERS
from infrastructure.cli import processes
from infrastructure.settings import Settings
from tests import services
from tests.e2e.pipeline import FAULT_REPORTS, POSTSAVE, Pipeline, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def users(amqp_url: str) -> Iterator[dict[str, str]]:
    """Each of BROKER_USERS, under a name of the test's own, with the permissions that
    `postsave broker-users` prints, run as printed: {component: its broker URL}."""
    vhost = urlsplit(amqp_url).path[1:]
    printed = subprocess.run(
        [POSTSAVE, "broker-users", "--vhost", vhost], capture_output=True, text=True, check=True
    ).stdout
    tag = uuid.uuid4().hex[:6]
    urls = {}
    try:
        for line in printed.splitlines():
            if line.startswith("#"):
                continue
            argv = shlex.split(line)
            user = argv[4]
            own = f"{user}-{tag}"
            services.rabbitmqctl("add_user", own, f"pw-{tag}")
            urls[user.removeprefix("postsave-")] = (
                f"amqp://{own}:pw-{tag}@{urlsplit(amqp_url).netloc.rsplit('@', 1)[-1]}/{vhost}"
            )
            services.rabbitmqctl(*argv[1:4], own, *argv[5:])
        assert set(urls) == {user.removeprefix("postsave-") for user in BROKER_USERS}
        yield urls
    finally:
        for user in BROKER_USERS:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_user", f"{user}-{tag}"], capture_output=True
            )


def refused(url: str, act: str) -> bool:
    """Whether the broker refuses `act` on postsave.recalc to the user of `url`."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            if act == "consume":
                channel.basic_get(RECALC_QUEUE)
            elif act == "purge":
                channel.queue_purge(RECALC_QUEUE)
            elif act == "delete":
                channel.queue_delete(RECALC_QUEUE)
            elif act == "publish":
                channel.confirm_select()
                channel.basic_publish(
                    Message(b"{}"), exchange=RECALC_QUEUE, routing_key=RECALC_QUEUE
                )
                connection.drain_events(timeout=5)
            else:
                raise AssertionError(act)
        except AccessRefused:
            return True
    return False


def test_each_component_runs_as_its_own_broker_user(
    pg_url: str, amqp_url: str, users: dict[str, str], tmp_path: Path
) -> None:
    # The test's own user (guest) declares and empties postsave's queues first, as a worker
    # of an earlier run would have left them.
    pipeline = Pipeline(pg_url, amqp_url, tmp_path)
    app = Container(Settings(database_url=pg_url, broker_url=users["app"]), nudge=True)
    as_user = {name: {**pipeline.env, "POSTSAVE_BROKER_URL": url} for name, url in users.items()}
    try:
        pipeline.started += [
            processes.start_worker(
                as_user["relay"], tmp_path / "relay.log", queues=[POLL_QUEUE], name="relay"
            ),
            processes.start_worker(
                as_user["worker"], tmp_path / "worker.log", queues=[RECALC_QUEUE], name="recalc1"
            ),
            processes.start_beat(as_user["beat"], tmp_path / "beat.log"),
        ]
        pipeline.wait_for_log("relay@", count=1)
        use_cases.create_bars(app.uow(), 2, count=100)
        foos = use_cases.create_foos(app.uow(), 5, count=40)
        use_cases.complete_foos(app.uow(), foos)  # each commit nudges, as the app's user
        assert app.relay_nudge is not None
        assert app.relay_nudge.flush()
        nudge_problem = app.nudge_problem()
        wait_until(lambda: operations.outbox_stats(app.uow()).drained, "a drained outbox", 60)
        check = subprocess.run(
            [POSTSAVE, "check"],
            env={**os.environ, **as_user["monitor"]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        pings = subprocess.run(
            [*processes.celery_command("inspect", "ping", "--timeout", "5")],
            env={**os.environ, **pipeline.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        pipeline.assert_processes_alive()
        logs = pipeline.logs(tail=None)
    finally:
        app.close()
        pipeline.stop()
    app_refused = {act: refused(users["app"], act) for act in ("consume", "purge", "delete")}
    app_refused["publish to postsave.recalc"] = refused(users["app"], "publish")
    FAULT_REPORTS.append(
        f"broker users: 40 events relayed and applied; the app's user refused {app_refused}"
    )

    assert nudge_problem is None
    assert check.returncode == 0, check.stdout + check.stderr
    assert "relay@" in pings.stdout and "recalc1@" in pings.stdout, pings.stdout
    assert "ACCESS_REFUSED" not in logs
    assert all(app_refused.values()), app_refused


def test_a_worker_whose_user_may_not_declare_its_queue_stops_with_one_line(
    pg_url: str, amqp_url: str, users: dict[str, str], tmp_path: Path
) -> None:
    """The application's user for a recalculation worker: exit 77 (EX_NOPERM, which the
    systemd units do not restart on) and one line, not Celery's traceback."""
    pipeline = Pipeline(pg_url, amqp_url, tmp_path)
    try:
        env = {**pipeline.env, "POSTSAVE_BROKER_URL": users["app"]}
        worker = processes.start_worker(
            env, tmp_path / "worker.log", queues=[RECALC_QUEUE], name="recalc1"
        )
        pipeline.started.append(worker)
        code = worker.wait(60)
        log = (tmp_path / "worker.log").read_text()
    finally:
        pipeline.stop()
    lines = [line for line in log.splitlines() if line.startswith("postsave worker: ")]
    assert code == os.EX_NOPERM, log
    assert len(lines) == 1, log
    assert lines[0].startswith("postsave worker: the broker refused this worker's user (")
    assert "ACCESS_REFUSED" in lines[0]
    assert lines[0].endswith("(Least privilege: broker users)")
    assert "Traceback" not in log
