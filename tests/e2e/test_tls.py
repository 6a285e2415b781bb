"""TLS both ways, on servers of the test's own with certificates from a CA made at test time:
a PostgreSQL cluster with `ssl = on`, reached with `sslmode=verify-full` and the CA file, and a
RabbitMQ node with a TLS listener that asks for a client certificate, reached over amqps://
with POSTSAVE_BROKER_CA_FILE, _CERT_FILE and _KEY_FILE. The pipeline runs over both; a wrong CA
fails with one line, never with a quiet fall back to plain text."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from domain import use_cases
from infrastructure.broker.names import RECALC_QUEUE
from infrastructure.cli import processes
from infrastructure.settings import BrokerTls
from tests.certificates import Authority, make_authority
from tests.e2e.pipeline import FAULT_REPORTS, Pipeline, finish, postsave, produce
from tests.e2e.postgres_cluster import OWNER, Cluster, Clusters
from tests.e2e.rabbitmq_node import RabbitMQNode, free_port
from tests.recalculations import DIGEST

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.xdist_group("tls"),
]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_cluster(clusters: Clusters, authority: Authority) -> Cluster:
    """A PostgreSQL primary of the test's own serving TLS with the CA's certificate."""
    issued = authority.issue("postgres")
    owner = pwd.getpwnam(OWNER)
    where = {}
    for name, path in (("server.crt", issued.cert), ("server.key", issued.key)):
        target = clusters.base / name
        shutil.copy(path, target)
        os.chown(target, owner.pw_uid, owner.pw_gid)
        target.chmod(0o600)
        where[name] = str(target)
    primary = clusters.primary(synchronous_standby=None)
    # ALTER SYSTEM and a reload: pg_createcluster leaves `ssl` to its own defaults.
    primary.configure(ssl="on", ssl_cert_file=where["server.crt"], ssl_key_file=where["server.key"])
    return primary


@pytest.fixture(scope="module")
def tls_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory, authority: Authority
) -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of the test's own with a TLS listener that verifies its clients."""
    base = tmp_path_factory.mktemp("rabbitmq-tls")
    issued = authority.issue("rabbitmq")
    port = free_port()
    node = RabbitMQNode(
        base,
        config=(
            f"listeners.ssl.default = 127.0.0.1:{port}\n"
            f"ssl_options.cacertfile = {authority.cert}\n"
            f"ssl_options.certfile = {issued.cert}\n"
            f"ssl_options.keyfile = {issued.key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        ),
    )
    node.start()
    node.tls_port = port  # type: ignore[attr-defined]
    try:
        yield node
    finally:
        node.stop()


def verify_full(cluster: Cluster, database: str, ca: Path) -> str:
    return f"{cluster.url(database)}?sslmode=verify-full&sslrootcert={quote(str(ca), safe='/')}"


def test_the_pipeline_runs_over_tls_to_postgresql_and_rabbitmq(
    tls_cluster: Cluster, tls_rabbitmq: RabbitMQNode, authority: Authority, tmp_path: Path
) -> None:
    tls_cluster.postsave_database()
    database_url = verify_full(tls_cluster, "postsave", authority.cert)
    client = authority.issue("postsave-client")
    broker_url = f"amqps://guest:guest@localhost:{tls_rabbitmq.tls_port}//"  # type: ignore[attr-defined]
    tls = BrokerTls(str(authority.cert), str(client.cert), str(client.key))
    pipeline = Pipeline(database_url, broker_url, tmp_path, broker_tls=tls, recalculation=DIGEST)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=200)
        pipeline.start_worker()
        pipeline.start_beat()
        produce(pipeline, 60)
        finish(pipeline, "over TLS to PostgreSQL (verify-full) and RabbitMQ (client certificate)")
        check = postsave(pipeline.env, "check")
        with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
            encrypted = conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
    finally:
        pipeline.stop()
    assert check.returncode == 0, check.stdout + check.stderr
    assert encrypted == (True,)
    FAULT_REPORTS.append(f"TLS: {check.stdout.strip()}")


def test_a_wrong_ca_fails_in_one_line_on_either_side(
    tls_cluster: Cluster, tls_rabbitmq: RabbitMQNode, authority: Authority, tmp_path: Path
) -> None:
    tls_cluster.postsave_database()
    stranger = make_authority(tmp_path / "stranger", "a stranger's CA")
    client = authority.issue("postsave-client")
    base = {
        "POSTSAVE_BROKER_URL": f"amqps://guest:guest@localhost:{tls_rabbitmq.tls_port}//",  # type: ignore[attr-defined]
        "POSTSAVE_BROKER_CERT_FILE": str(client.cert),
        "POSTSAVE_BROKER_KEY_FILE": str(client.key),
    }
    wrong_database = {
        **base,
        "POSTSAVE_DATABASE_URL": verify_full(tls_cluster, "postsave", stranger.cert),
        "POSTSAVE_BROKER_CA_FILE": str(authority.cert),
    }
    status = postsave(wrong_database, "status")
    assert status.returncode == 1
    assert len(status.stderr.splitlines()) == 1, status.stderr
    assert "certificate verify failed" in status.stderr

    missing_ca = {
        **wrong_database,
        "POSTSAVE_DATABASE_URL": verify_full(tls_cluster, "postsave", tmp_path / "no-such-ca.crt"),
    }
    status = postsave(missing_ca, "status")
    assert status.returncode == 1
    assert len(status.stderr.splitlines()) == 1, status.stderr
    assert "no-such-ca.crt" in status.stderr

    wrong_broker = {
        **base,
        "POSTSAVE_DATABASE_URL": verify_full(tls_cluster, "postsave", authority.cert),
        "POSTSAVE_BROKER_CA_FILE": str(stranger.cert),
    }
    check = postsave(wrong_broker, "check", "--timeout", "3")
    broker_lines = [line for line in check.stderr.splitlines() if line.startswith("broker: ")]
    assert check.returncode == 1
    assert len(broker_lines) == 1 and "CERTIFICATE_VERIFY_FAILED" in broker_lines[0], check.stderr
    worker = processes.start_worker(
        wrong_broker, tmp_path / "worker.log", queues=[RECALC_QUEUE], name="recalc1"
    )
    code = worker.wait(60)
    log = (tmp_path / "worker.log").read_text()
    said = [line for line in log.splitlines() if line.startswith("postsave worker: ")]
    assert code == os.EX_CONFIG, log
    assert len(said) == 1 and said[0].startswith(
        "postsave worker: the broker's certificate does not verify ("
    ), log
    assert "Traceback" not in log

    plain = postsave(
        {
            **wrong_broker,
            "POSTSAVE_BROKER_URL": f"amqp://guest:guest@localhost:{tls_rabbitmq.port}//",
        },
        "status",
    )
    assert plain.returncode == 2
    assert plain.stderr.startswith("postsave: error: POSTSAVE_BROKER_CA_FILE is set, but ")
