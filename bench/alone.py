"""One figure by itself, `python -m bench.<figure> [--quick | --full] [--json PATH]`: the run's
own RabbitMQ vhost and databases, the figure's table on stdout, all removed at the end."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.conditions import conditions
from bench.profile import FULL, QUICK, Profile
from bench.progress import step
from bench.schema import seed_postgres
from bench.services import Database, RunServices
from infrastructure.sql.migrate import upgrade

Results = dict[str, Any]


def parser(prog: str, description: str | None, quick: str, full: str) -> argparse.ArgumentParser:
    """--quick, --full (the default) and --json; a figure adds its own options."""
    found = argparse.ArgumentParser(prog=prog, description=description)
    mode = found.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=quick)
    mode.add_argument("--full", action="store_true", help=f"{full} (default)")
    found.add_argument("--json", type=Path, help="write the figure's results here")
    return found


def profile_of(args: argparse.Namespace) -> Profile:
    return QUICK if args.quick else FULL


def migrated(services: RunServices, name: str, profile: Profile, **options: Any) -> Database:
    """A database of the run's at the latest revision, with the profile's bars."""
    database = services.create_database(name, **options)
    upgrade(database.url)
    seed_postgres(database.conninfo, profile.bars, 0)
    return database


def run(
    key: str,
    profile: Profile,
    json_path: Path | None,
    figure: Callable[[RunServices], Any],
    render: Callable[[Results], str | None],
) -> int:
    """`figure` gets the run's services, with its vhost made and postsave's broker setting on
    it; its result goes under `key`, rendered by `render`."""
    services = RunServices()
    try:
        step(f"{key} alone: profile {profile.name}")
        services.create_vhost()
        os.environ["POSTSAVE_BROKER_URL"] = services.amqp_url
        results = {"conditions": conditions(profile), key: figure(services)}
        print(render(results), flush=True)
        if json_path:
            report.write_json(results, json_path)
    finally:
        step(f"{key} alone: dropping its databases and vhost")
        services.close()
    return 0
