"""`postsave migrate`, `check`, `metrics` and `demo`: running and watching a deployment."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from alembic.script import ScriptDirectory

from infrastructure.bootstrap import Container
from infrastructure.broker.permissions import rabbitmqctl_lines
from infrastructure.cli.arguments import (
    EXIT_FAILED,
    command,
    fail,
    identifier,
    port,
    seconds,
    vhost,
)
from infrastructure.cli.demo import run_demo
from infrastructure.ops import health, metrics
from infrastructure.ops.web_config import WebConfig, WebConfigError, load_web_config
from infrastructure.sql.grants import grants_sql
from infrastructure.sql.migrate import alembic_config, upgrade


def _migrate(c: Container, args: argparse.Namespace) -> int:
    upgrade(c.settings.database_url)
    print("database is at the latest revision")
    return 0


def _grants(c: Container, args: argparse.Namespace) -> int:
    head = ScriptDirectory.from_config(alembic_config(c.settings.database_url)).get_current_head()
    sys.stdout.write(grants_sql(str(head), args.schema))
    return 0


def _broker_users(c: Container, args: argparse.Namespace) -> int:
    print(f"# postsave's broker users on vhost {args.vhost}: create each first with")
    print("# `rabbitmqctl add_user NAME` (it asks for the password), then:")
    print("\n".join(rabbitmqctl_lines(args.vhost)))
    return 0


def _demo(c: Container, args: argparse.Namespace) -> int:
    return run_demo(c.settings)


def _check(c: Container, args: argparse.Namespace) -> int:
    max_age = args.max_relay_age
    if max_age is None:
        max_age = health.default_max_relay_age_s(c.settings)
    checks = health.run_checks(c.settings, max_age, args.timeout)
    for check in checks:
        print(check, file=sys.stdout if check.ok else sys.stderr)
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def _metrics(c: Container, args: argparse.Namespace) -> int:
    try:
        web = load_web_config(args.web_config) if args.web_config else WebConfig()
    except WebConfigError as error:
        return fail(f"--web-config {error}")
    try:
        exporter = metrics.Exporter(c.uow, args.host, args.port, web)
    except OSError as error:
        return fail(
            f"cannot listen on {args.host}:{args.port} ({error.strerror or error}); "
            "choose another --host or --port"
        )
    guarded = " (basic auth)" if web.users else ""
    print(
        f"serving Prometheus metrics on {web.scheme}://{args.host}:{args.port}/metrics{guarded}",
        flush=True,
    )
    exporter.wait()
    return 0


def register(commands: Any) -> None:
    command(commands, "migrate", _migrate, "upgrade the database to the latest schema")
    p = command(
        commands,
        "grants",
        _grants,
        "print the SQL that creates postsave's group roles (postsave_app, postsave_worker, "
        "postsave_monitor) if missing and grants each exactly what it needs at the latest "
        "revision; apply it with psql as the schema's owner or a superuser after each migrate",
    )
    p.add_argument(
        "--schema",
        type=identifier,
        default="public",
        help="the schema postsave's tables are in (default: %(default)s)",
    )
    p = command(
        commands,
        "broker-users",
        _broker_users,
        "print the rabbitmqctl commands that give postsave's broker users (app, beat, relay, "
        "worker, monitor) exactly the permissions each needs on a vhost",
    )
    p.add_argument("--vhost", type=vhost, required=True, help="the RabbitMQ vhost")
    command(commands, "demo", _demo, "run the whole pipeline on the configured database/broker")
    p = command(
        commands,
        "check",
        _check,
        "exit 0 only if the database is at the latest migration, the broker answers and a "
        "relay committed a batch recently; else one line per failed check",
    )
    p.add_argument(
        "--max-relay-age",
        type=seconds,
        metavar="S",
        help="how long ago the relay's last batch may be (default: 3 poll intervals, at least "
        "10 s)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=health.DEFAULT_TIMEOUT_S,
        metavar="S",
        help="how long each check may wait for an answer (default: %(default)s s)",
    )
    p = command(commands, "metrics", _metrics, "serve Prometheus metrics at /metrics")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument("--port", type=port, required=True)
    p.add_argument(
        "--web-config",
        metavar="FILE",
        help="the Prometheus exporters' web configuration file: TLS (tls_server_config) and "
        "basic auth with bcrypt hashes (basic_auth_users)",
    )
