"""`python -m bench [--quick | --full] [--only FIGURE]`: set up, run the figures, report, clean up;
`python -m bench --publish RESULTS [RESULTS ...]` writes docs/performance.md and its plot from
results files (the first's figures, then the others' it lacks)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness.contenders import Contender, Postsave, Procrastinate, make_all
from bench.harness.data import execute, seed_postgres, seed_sqlite
from bench.harness.processes import REPO, elapsed, step
from bench.harness.profile import FULL, LEASE_S, QUICK, SETTINGS_ENV, Profile
from bench.harness.proxy import BrokerProxy
from bench.harness.report import Results, write_json
from bench.harness.services import RunServices, machine
from infrastructure.sql.migrate import upgrade

# fmt: off
ROLES = ("naive", "direct", "procrastinate", "postsave", "misc", "writepath", "heavy",
         "parts", "scale_empty")
# fmt: on


@dataclass(frozen=True)
class Figure:
    """One figure: its conditions (results["conditions"]), its tables, and how it is measured:
    `run` once per run, or `measure` once per contender it `takes`, with that contender's
    workers running (`late`: after the contender's other figures, as it changes its data)."""

    name: str
    conditions: Callable[[Profile], dict[str, str]]
    tables: Callable[[Results], str | None]
    run: Callable[[Run], None] | None = None
    takes: Callable[[Profile], Sequence[str]] = lambda _: ()
    measure: Callable[[Run, Contender], None] | None = None
    late: bool = False


class Run:
    """The run's services (databases: one per role, copies of one seeded template), the broker
    proxy and the results."""

    def __init__(self, profile: Profile, figures: Sequence[Figure], workdir: Path) -> None:
        self.profile, self.workdir = profile, workdir
        self.services = RunServices()
        self.proxy = BrokerProxy()
        self.results: Results = {
            "profile": dataclasses.asdict(profile),
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "conditions": {k: v for f in figures for k, v in f.conditions(profile).items()},
        }

    def prepare(self) -> None:
        step(f"setup: RabbitMQ vhost and PostgreSQL databases (run {self.services.run_id})")
        self.services.create_vhost()
        self.amqp_url = self.services.amqp_url
        template = self.services.create_database("template")
        upgrade(template.url)
        seed_postgres(template.conninfo, self.profile.bars, foos_needed(self.profile))
        self.roles = {
            role: self.services.create_database(role, template=template)
            for role in (*ROLES, "scale_full")
        }
        self.services.drop_database(template)
        # Whatever reads settings from the environment in this process or its children gets
        # the run's services, never postsave's embedded default.
        os.environ["POSTSAVE_DATABASE_URL"] = self.roles["misc"].url
        os.environ["POSTSAVE_BROKER_URL"] = os.environ["BENCH_BROKER_URL"] = self.amqp_url
        self.results["machine"] = machine()
        self.fingerprint = self.services.fingerprint()

    def contenders(self, names: set[str]) -> list[Contender]:
        """The contenders among `names`, in the order they run, each ready to start."""
        found = make_all(self.workdir, self.amqp_url, self.roles, SETTINGS_ENV)
        found = [contender for contender in found if contender.name in names]
        for contender in found:
            if isinstance(contender, Procrastinate):
                from procrastinate.schema import SchemaManager  # the bench extra's

                execute(contender.dsn, SchemaManager.get_schema())
            if contender.name == "postsave-pg":
                contender.settle_quiet_s = LEASE_S + 3.0  # a lost message returns with its lease
            if isinstance(contender, Postsave) and not contender.dsn:
                database = contender.database_url.removeprefix("sqlite:///")
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                upgrade(contender.database_url)
                foos = self.profile.repetitions * self.profile.embedded_events + 5000
                seed_sqlite(contender.database_url, self.profile.bars, foos)
            else:
                contender.threads = self.profile.producer_threads
        return found


def foos_needed(profile: Profile) -> int:
    """Every foo a contender may complete in one run: each one gets its own, never twice."""
    latency = sum(round(rate * seconds) for rate, seconds in profile.loads)
    faults = 2 * round(profile.kill_rate * profile.kill_seconds)  # the kill and the outage
    throughput = 2 * profile.repetitions * profile.events  # postsave: two producers
    parts = round(sum(profile.parts_rates) * profile.parts_window_s)  # 9c's windows
    return (
        max(throughput + latency + faults + profile.flood + 2 * profile.coalesce_events, parts)
        + 1000
    )


def measure(run: Run, figures: Sequence[Figure]) -> None:
    for figure in figures:
        if figure.run is not None:
            figure.run(run)
    per_contender = sorted((f for f in figures if f.measure), key=lambda f: f.late)
    names = {name for f in per_contender for name in f.takes(run.profile)}
    for contender in run.contenders(names):
        step(f"{contender.name}: starting its workers")
        contender.start()
        try:
            for figure in per_contender:
                if figure.measure and contender.name in figure.takes(run.profile):
                    figure.measure(run, contender)
        finally:
            step(f"{contender.name}: stopping its workers")
            contender.stop()


def _names(results: Results, figures: Sequence[Figure], profile: Profile) -> str:
    """The figures a run measured, by the conditions it recorded."""
    return ", ".join(
        f.name for f in figures if set(f.conditions(profile)) & set(results["conditions"])
    )


def header(results: Results, names: str = "") -> str:
    machine, load = results["machine"], results["machine"].get("load_average_at_start", [])
    text = (
        f"postsave benchmark{f' ({names})' if names else ''}, profile "
        f"{results['profile']['name']}: {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), PostgreSQL {machine['postgresql']}, RabbitMQ "
        f"{machine['rabbitmq']}, Python {machine['python']}, Celery {machine['celery']}, "
        f"procrastinate {machine['procrastinate']}; {results['started_at']}; "
        f"{results['duration_s']:.0f} s; load average at start "
        f"{', '.join(f'{x:.1f}' for x in load)}\n"
    )
    if results.get("services_restarted_during_run"):
        text += (
            "\nWARNING: RabbitMQ or PostgreSQL restarted during this run (another suite on the "
            "machine?); its numbers are not comparable.\n"
        )
    return text


def report(results: Results, figures: Sequence[Figure]) -> str:
    described = results.get("figure1", {})
    contenders = "".join(f"- {name}: {e['description']}\n" for name, e in described.items())
    if contenders:
        contenders = (
            f"Contenders:\n{contenders}invariant (every table): over that scenario the bars "
            "moved by exactly weight x the amounts of the foos it completed: nothing lost, "
            "nothing applied twice.\n"
        )
    parts = [header(results), contenders, *(f.tables(results) for f in figures)]
    return "\n".join(part for part in parts if part)


def publish(results_paths: Sequence[Path], figures: Sequence[Figure]) -> None:
    """docs/performance.md from full runs' results (the first's figures, then any others' that
    it lacks: a figure run alone with --only), above the hand-written reading (kept from the
    file as it is, from "## What the numbers say" on), and the plot beside it."""
    from bench.harness.plot import plot

    runs = [json.loads(path.read_text()) for path in results_paths]
    results = dict(runs[0])
    for later in runs[1:]:
        for key, value in later.items():
            results.setdefault(key, value)
    # Its conditions as this bench words them, for the sizes that run had.
    base = FULL if results["profile"]["name"] == "full" else QUICK
    profile = Profile(**{**dataclasses.asdict(base), **results["profile"]})
    results["conditions"] = {k: v for f in figures for k, v in f.conditions(profile).items()}
    for entry in results.get("figure1", {}).values():  # runs before 2026-12-04 named its file
        entry["description"] = entry["description"].replace(" (bench/producer.py)", "")
    docs = REPO / "docs"
    page, reading = docs / "performance.md", "## What the numbers say"
    kept = page.read_text().partition(reading) if page.exists() else ("", "", "")
    which = "one full run" if len(runs) == 1 else f"{len(runs)} full runs, each figure from one"
    page.write_text(
        "# Performance\n\n"
        f"Written by `python -m bench --publish` from the results of {which} (`make bench`, "
        "`var/bench/results.json`); every table's conditions are under its title. The "
        f"run{'s' if len(runs) > 1 else ''}:\n\n"
        + "\n".join(
            header(each, _names(each, figures, profile) if len(runs) > 1 else "") for each in runs
        )
        + "\n![throughput and latency per contender](performance.png)\n\n"
        f"{report(results, figures).split(chr(10), 1)[1].lstrip()}\n{kept[1]}{kept[2]}"
    )
    plot(results, docs / "performance.png")
    step(f"wrote {page} and {docs / 'performance.png'}")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below, unlike the default


def main(figures: Sequence[Figure], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI smoke test: small sizes")
    mode.add_argument("--full", action="store_true", help="every figure at full size (default)")
    mode.add_argument(
        "--publish", type=Path, nargs="+", metavar="RESULTS", help="write docs/performance.md"
    )
    names = [figure.name for figure in figures]
    parser.add_argument("--only", choices=names, action="append", help="this figure (repeatable)")
    args = parser.parse_args(argv)
    if args.publish:
        publish(args.publish, figures)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    profile = QUICK if args.quick else FULL
    chosen = [figure for figure in figures if not args.only or figure.name in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="postsave-bench-"))
    step(f"profile {profile.name}: {', '.join(f.name for f in chosen)}; logs in {workdir}")
    started = time.monotonic()
    run = Run(profile, chosen, workdir)
    ok = False
    try:
        run.prepare()
        measure(run, chosen)
        run.results["duration_s"] = time.monotonic() - started
        run.results["services_restarted_during_run"] = run.services.fingerprint() != run.fingerprint
        print(report(run.results, chosen), flush=True)
        stem = REPO / "var" / "bench" / ("results-quick" if args.quick else "results")
        stem.parent.mkdir(parents=True, exist_ok=True)
        step(f"writing {stem}.json and {stem}.png")
        write_json(run.results, stem.with_suffix(".json"))
        from bench.harness.plot import plot  # matplotlib: slow to import, needed here only

        plot(run.results, stem.with_suffix(".png"))
        ok = True
    finally:
        step("cleanup: dropping the run's databases and vhost")
        run.proxy.close()
        run.services.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)
    step(f"done in {elapsed():.0f}s")
    return 0
