"""Passwords from files: POSTSAVE_DATABASE_URL_FILE and POSTSAVE_BROKER_URL_FILE, as systemd's
LoadCredential= and container secrets hand them over. A worker and beat started with nothing
but the files' paths run the pipeline, and the password shows in no process's command line or
environment, in no log line (at DEBUG), in no task event, and in no output of Celery's own
tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from celery import Celery

from domain import use_cases
from infrastructure.cli import processes
from tests import services
from tests.e2e.pipeline import Pipeline, finish, produce
from tests.recalculations import DIGEST

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]


def with_password(url: str, user: str | None, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    name = user or (parts.username or "")
    return urlunsplit(parts._replace(netloc=f"{name}:{quote(password, safe='')}@{host}"))


@pytest.fixture
def secret_urls(pg_url: str, amqp_url: str) -> Iterator[tuple[str, str, str]]:
    """A password of the test's own on both URLs: a RabbitMQ user of the test's own on the
    session's vhost, and the PostgreSQL URL with a password (the test server trusts local
    connections, so it is carried and never checked: what matters is where it shows)."""
    password = f"pw-{uuid.uuid4().hex}"
    user = f"postsave-test-{uuid.uuid4().hex[:8]}"
    vhost = urlsplit(amqp_url).path[1:] or "/"
    services.rabbitmqctl("add_user", user, password)
    try:
        services.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield (
            password,
            with_password(pg_url, None, password),
            with_password(amqp_url, user, password),
        )
    finally:
        services.rabbitmqctl("delete_user", user)


class EventCapture:
    """Celery's task events, as Flower and `celery events` receive them, from the start of
    the test to `stop`."""

    def __init__(self, app: Celery) -> None:
        self.events: list[dict[str, Any]] = []
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> list[dict[str, Any]]:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.release()
        return list(self.events)


def session_processes(leader: int) -> list[int]:
    """Every process of a session: a Celery main process and its pool."""
    found = subprocess.run(["pgrep", "-s", str(leader)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_urls_from_files_keep_the_password_out_of_processes_logs_and_celerys_tools(
    secret_urls: tuple[str, str, str], tmp_path: Path
) -> None:
    password, database_url, broker_url = secret_urls
    pipeline = Pipeline(database_url, broker_url, tmp_path, recalculation=DIGEST, part_size=250)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name, url in (("database-url", database_url), ("broker-url", broker_url)):
        (credentials / name).write_text(url + "\n")
        (credentials / name).chmod(0o600)
    env = {
        **pipeline.env,
        "POSTSAVE_DATABASE_URL": "",
        "POSTSAVE_BROKER_URL": "",
        "POSTSAVE_DATABASE_URL_FILE": str(credentials / "database-url"),
        "POSTSAVE_BROKER_URL_FILE": str(credentials / "broker-url"),
    }
    events = EventCapture(pipeline.app)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=250)
        worker = processes.start_worker(env, tmp_path / "worker.log", loglevel="DEBUG")
        beat = processes.start_beat(env, tmp_path / "beat.log", loglevel="DEBUG")
        pipeline.started += [worker, beat]
        produce(pipeline, 50)
        finish(pipeline, "URLs from files")
        pids = session_processes(worker.pid) + session_processes(beat.pid)
        assert len(pids) >= 4  # beat, the worker's main process and its two pool processes
        seen = {
            f"/proc/{pid}/{what}": Path(f"/proc/{pid}/{what}").read_bytes().decode(errors="replace")
            for pid in pids
            for what in ("cmdline", "environ")
        }
        tools = {
            " ".join(argv): subprocess.run(
                argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
            )
            for argv in (
                processes.celery_command("inspect", "conf", "--timeout", "5"),
                processes.celery_command("report"),
                processes.celery_command("inspect", "stats", "--timeout", "5"),
            )
        }
        status = subprocess.run(
            [str(Path(sys.executable).parent / "postsave"), "check"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        captured = events.stop()
        pipeline.stop()

    kinds = {event.get("type") for event in captured}
    assert {"task-sent", "task-received", "task-succeeded"} <= kinds, kinds
    assert status.returncode == 0, status.stdout + status.stderr
    assert "***" in status.stdout
    for argv, done in tools.items():
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    conf = tools[" ".join(processes.celery_command("inspect", "conf", "--timeout", "5"))]
    assert "broker_url" in conf.stdout  # the setting is shown, its password not
    logs = pipeline.logs(tail=None)
    assert "DEBUG" in logs
    everything = {
        **seen,
        **{argv: done.stdout + done.stderr for argv, done in tools.items()},
        "postsave check": status.stdout + status.stderr,
        "logs": logs,
        "task events": json.dumps(captured, default=str),
    }
    leaks = [where for where, text in everything.items() if password in text]
    assert leaks == []
