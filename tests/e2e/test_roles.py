"""The whole pipeline under least-privilege roles: the application's calls as a member of
postsave_app, the workers and beat as a member of postsave_worker, the command line's reading
commands and the Prometheus exporter as a member of postsave_monitor; the database owned by a
plain role that ran the migrations, and no superuser anywhere (tests/roles.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from domain import operations, use_cases
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.cli.test_check_and_metrics import scrape
from tests.e2e.pipeline import FAULT_REPORTS, POSTSAVE, Pipeline, postsave, produce, wait_until
from tests.roles import role_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]


def test_the_pipeline_runs_with_a_role_per_component(amqp_url: str, tmp_path: Path) -> None:
    with role_database() as roles:
        pipeline = Pipeline(roles.app, amqp_url, tmp_path, process_database_url=roles.worker)
        monitor = Container(Settings(database_url=roles.monitor, nudge=False))
        as_monitor = {**pipeline.env, "POSTSAVE_DATABASE_URL": roles.monitor}
        as_worker = {**pipeline.env, "POSTSAVE_DATABASE_URL": roles.worker}
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
        exporter = subprocess.Popen(
            [POSTSAVE, "metrics", "--port", str(port)],
            env={**os.environ, **as_monitor},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            use_cases.create_bars(pipeline.container.uow(), 2, count=300)  # the application
            pipeline.start_worker()
            pipeline.start_beat()
            ids = produce(pipeline, 100)
            use_cases.create_bars(pipeline.container.uow(), 3, count=10)  # while in flight
            wait_until(
                lambda: operations.outbox_stats(monitor.uow()).drained, "a drained outbox", 120
            )
            pipeline.assert_processes_alive()
            assert exporter.stdout is not None
            assert exporter.stdout.readline().startswith("serving Prometheus metrics on ")
            scraped = scrape(port)
            status = postsave(as_monitor, "status", "--json")
            check = postsave(as_monitor, "check")
            dead = postsave(as_monitor, "dead", "list")
            verify = postsave(as_worker, "verify")
            bars_as_monitor = postsave(as_monitor, "bar", "create", "--weight", "1")
        finally:
            exporter.terminate()
            exporter.communicate(timeout=10)
            pipeline.stop()
            monitor.close()

    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["pending"], counts["in_flight"], counts["dead"]) == (0, 0, 0)
    assert counts["processed"] == len(ids) + len(ids) // 10 + len(ids) // 20
    assert check.returncode == 0, check.stdout + check.stderr
    assert "grants: ok, " in check.stdout
    assert dead.returncode == 0, dead.stderr
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert scraped["postsave_database_up"] == 1
    assert scraped["postsave_events_applied_total"] == counts["processed"]
    # The monitor's role reads: writing is refused, in one line.
    assert bars_as_monitor.returncode == 1
    assert "permission denied for table" in bars_as_monitor.stderr
    assert len(bars_as_monitor.stderr.splitlines()) == 1
    FAULT_REPORTS.append(
        f"roles: {counts['processed']} events processed with the application, the workers, "
        f"beat, the command line and the exporter each as its own role; {check.stdout.strip()}"
    )
