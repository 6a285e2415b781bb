"""A real Prometheus server scrapes `postsave metrics` while work flows through real workers
over bars in three parts, and the series are read back through Prometheus' HTTP API, alert
rules loaded."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from domain import use_cases
from domain.parts import DEFAULT_PART_SIZE
from tests.certificates import make_authority
from tests.e2e.pipeline import Pipeline, produce
from tests.services import unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "postsave-alerts.yml"
POSTSAVE = Path(sys.executable).parent / "postsave"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def eventually(read: Callable[[], Any], wanted: Callable[[Any], bool], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    seen = read()
    while not wanted(seen):
        assert time.monotonic() < deadline, f"still {seen!r} after {timeout_s} s"
        time.sleep(0.5)
        seen = read()
    return seen


class Prometheus:
    def __init__(self, workdir: Path, target_port: int, scrape_configs: str | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            unavailable("Prometheus", "no prometheus binary (apt-get install prometheus)")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            + (
                scrape_configs
                or "  - job_name: postsave\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
            )
        )
        with (workdir / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log_path = workdir / "prometheus.log"
        eventually(self._ready, bool, 30)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        answer = get_json(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}")
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, expression: str) -> float | None:
        """The single value of an instant query, or None when it has no series."""
        result = self.api("query", query=expression)["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def exporter(pg_pipeline: Pipeline, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with (tmp_path / "metrics.log").open("wb") as log:
        process = subprocess.Popen(
            [str(POSTSAVE), "metrics", "--port", str(port)],
            env={**os.environ, **pg_pipeline.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pg_pipeline.started.append(process)  # stopped with the pipeline
    yield port


@pytest.fixture
def prometheus(exporter: int, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, exporter)
    yield server
    server.stop()


def test_prometheus_scrapes_the_outbox_while_work_flows(
    pg_pipeline: Pipeline, prometheus: Prometheus
) -> None:
    # Work waits in the outbox before any worker runs, so the scrapes see a backlog first.
    use_cases.create_bars(pg_pipeline.container.uow(), 3, count=2 * DEFAULT_PART_SIZE + 1)
    produce(pg_pipeline, 60)
    eventually(lambda: prometheus.value('postsave_outbox_events{state="pending"}'), bool, 30)
    pending = prometheus.value('postsave_outbox_events{state="pending"}')
    assert pending is not None and pending > 0
    assert prometheus.value("postsave_relay_last_pass_age_seconds") == float("inf")
    lag = eventually(lambda: prometheus.value("postsave_projection_lag_seconds"), bool, 30)
    assert lag is not None and lag > 0  # no event is applied yet
    assert prometheus.value('postsave_parts{state="ready"}') == 3
    assert prometheus.value('postsave_parts{state="dead"}') == 0

    pg_pipeline.start_worker()
    pg_pipeline.start_beat()
    pg_pipeline.wait_until_drained()
    applied = pg_pipeline.counts()["processed"]

    # The drained state, once a scrape after the drain has landed (an event applied by another
    # pass stays in flight until its own message is back, so the totals can come first).
    drained = (float(applied), 0.0, 0.0)
    assert eventually(
        lambda: (
            prometheus.value("postsave_events_applied_total"),
            prometheus.value('postsave_outbox_events{state="pending"}'),
            prometheus.value('postsave_outbox_events{state="in_flight"}'),
        ),
        lambda seen: seen == drained,
        30,
    )
    assert prometheus.value("postsave_outbox_oldest_pending_age_seconds") == 0
    # Every part has applied every event: the bars have caught up with the foos.
    assert eventually(
        lambda: (
            prometheus.value("postsave_projection_lag_seconds"),
            prometheus.value("postsave_parts_behind"),
            prometheus.value('postsave_parts{state="dead"}'),
        ),
        lambda seen: seen == (0.0, 0.0, 0.0),
        30,
    )
    dispatched = prometheus.value("postsave_events_dispatched_total")
    assert dispatched is not None and dispatched >= applied
    age = eventually(lambda: prometheus.value("postsave_relay_last_pass_age_seconds"), _finite, 30)
    assert 0 <= age < 10
    assert prometheus.value('up{job="postsave"}') == 1
    assert prometheus.value("postsave_database_up") == 1
    # The backlog was seen as it drained, scrape by scrape.
    peak = prometheus.value('max_over_time(postsave_outbox_events{state="pending"}[5m])')
    assert peak is not None and peak >= pending
    # The alert rules shipped in deploy/prometheus are loaded, and none fires on a healthy run.
    groups = prometheus.api("rules")["groups"]
    assert groups and all(rule["health"] == "ok" for g in groups for rule in g["rules"])
    firing = prometheus.api("alerts")["alerts"]
    assert [a for a in firing if a["state"] == "firing"] == []


def _finite(value: float | None) -> bool:
    return value is not None and value != float("inf")


def test_prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_without(
    pg_url: str, tmp_path: Path
) -> None:
    """The exporter with a web configuration file (TLS from a CA made here, a bcrypt-hashed
    password), scraped by a real Prometheus three ways: with the CA and the password; with
    the CA and no password; over plain HTTP. Only the first gets the metrics."""
    authority = make_authority(tmp_path / "ca")
    issued = authority.issue("metrics")
    password = "scrape-" + os.urandom(4).hex()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {issued.cert}, key_file: {issued.key}}}\n"
        f"basic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    port = free_port()
    with (tmp_path / "metrics.log").open("wb") as log:
        exporter = subprocess.Popen(
            [str(POSTSAVE), "metrics", "--port", str(port), "--web-config", str(web)],
            env={**os.environ, "POSTSAVE_DATABASE_URL": pg_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    target = f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    tls = f"    scheme: https\n    tls_config: {{ca_file: '{authority.cert}'}}\n"
    jobs = (
        f"  - job_name: guarded\n{tls}"
        f"    basic_auth: {{username: prometheus, password: '{password}'}}\n{target}"
        f"  - job_name: no-password\n{tls}{target}"
        f"  - job_name: plain\n{target}"
    )
    prometheus = Prometheus(tmp_path, port, jobs)
    try:
        seen = eventually(
            lambda: (
                prometheus.value('up{job="guarded"}'),
                prometheus.value('up{job="no-password"}'),
                prometheus.value('up{job="plain"}'),
                prometheus.value('postsave_database_up{job="guarded"}'),
            ),
            lambda values: None not in values,
            30,
        )
        targets = prometheus.api("targets")["activeTargets"]
    finally:
        prometheus.stop()
        exporter.terminate()
        exporter.wait(10)
    assert seen == (1.0, 0.0, 0.0, 1.0)
    errors = {t["labels"]["job"]: t["lastError"] for t in targets}
    assert errors["guarded"] == ""
    assert "401" in errors["no-password"], errors
    assert errors["plain"] != "", errors
    assert password not in (tmp_path / "metrics.log").read_text()
