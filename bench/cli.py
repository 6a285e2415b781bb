"""`python -m bench [--quick | --full]`: set up, run every figure, report, clean up."""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    coalescing,
    contenders,
    dispatch,
    flood,
    heavy,
    plot,
    reference,
    report,
    scale,
    scenarios,
    writepath,
)
from bench.conditions import LEASE_S, POLL_INTERVAL_S, conditions
from bench.contenders import CeleryContender, Contender, Postsave
from bench.machine import machine
from bench.outage import BrokerProxy
from bench.profile import FULL, QUICK, Profile
from bench.progress import elapsed, step
from bench.schema import seed_postgres, seed_sqlite
from bench.services import Database, RunServices
from bench.stats import median
from infrastructure.sql.migrate import upgrade

ROLES = (
    "naive",
    "direct",
    "procrastinate",
    "postsave",
    "misc",
    "writepath",
    "scale_empty",
    "scale_full",
)

HERE = Path(__file__).resolve().parent
USE_CASES = "postsave-use-cases"  # the producer that completes foos as applications do
SQL_REFERENCE = "hand-written SQL, reference"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI smoke test: small sizes, < 2 min")
    mode.add_argument("--full", action="store_true", help="every figure at full size (default)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results go (default bench/)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def foos_needed(profile: Profile) -> int:
    """Every foo a contender may complete in one run: each one gets its own, never twice."""
    latency = sum(round(rate * seconds) for rate, seconds in profile.loads)
    faults = 2 * round(profile.kill_rate * profile.kill_seconds)  # the kill and the outage
    throughput = 2 * profile.repetitions * profile.events  # postsave: two producers
    coalescing = 2 * profile.coalesce_events
    return throughput + latency + faults + profile.flood + coalescing + 1000


class Run:
    def __init__(self, profile: Profile, services: RunServices, workdir: Path) -> None:
        self.profile = profile
        self.services = services
        self.workdir = workdir
        self.results: dict[str, Any] = {
            "profile": profile.as_dict(),
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "conditions": conditions(profile),
            "figure1": {},
            "figure2": {},
            "figure4": {},
            "loss": {},
            "outage": {},
        }
        self.proxy = BrokerProxy()

    # --- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        step(f"setup: RabbitMQ vhost and PostgreSQL databases (run {self.services.run_id})")
        self.services.create_vhost()
        template = self.services.create_database("template")
        upgrade(template.url)
        seed_postgres(template.conninfo, self.profile.bars, foos_needed(self.profile))
        self.roles: dict[str, Database] = {
            role: self.services.create_database(role, template=template) for role in ROLES
        }
        self.services.drop_database(template)
        # Whatever reads settings from the environment in this process or its children gets
        # the run's services, never postsave's embedded default.
        os.environ["POSTSAVE_DATABASE_URL"] = self.roles["misc"].url
        os.environ["POSTSAVE_BROKER_URL"] = self.services.amqp_url
        os.environ["BENCH_BROKER_URL"] = self.services.amqp_url
        self.results["machine"] = machine(self.roles["misc"].conninfo)
        self.results["machine"]["load_average_at_start"] = os.getloadavg()
        self.fingerprint = self.services.fingerprint()

    def settings_env(self) -> dict[str, str]:
        return {
            "POSTSAVE_POLL_INTERVAL": str(POLL_INTERVAL_S),
            "POSTSAVE_LEASE_SECONDS": str(LEASE_S),
        }

    def contenders(self) -> list[Contender]:
        amqp = self.services.amqp_url
        settings_env = self.settings_env()
        procrastinate = contenders.procrastinate(self.workdir, self.roles["procrastinate"])
        procrastinate.install_schema()
        postsave_pg = contenders.postsave_pg(
            self.workdir, self.roles["postsave"], amqp, settings_env
        )
        postsave_pg.settle_quiet_s = LEASE_S + 3.0  # a lost message comes back when its lease ends
        embedded = contenders.postsave_embedded(self.workdir, settings_env)
        self._prepare_embedded(embedded)
        found: list[Contender] = [
            contenders.ceiling(self.workdir, amqp),
            contenders.naive(self.workdir, self.roles["naive"]),
            contenders.direct(self.workdir, amqp, self.roles["direct"]),
            procrastinate,
            postsave_pg,
            embedded,
        ]
        for contender in found:
            contender.threads = (
                1 if contender.name == "postsave-embedded" else self.profile.producer_threads
            )
        return found

    def _prepare_embedded(self, contender: Postsave) -> None:
        database = contender.database_url.removeprefix("sqlite:///")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        upgrade(contender.database_url)
        profile = self.profile
        seed_sqlite(database, profile.bars, profile.repetitions * profile.embedded_events + 5000)

    # --- the figures ---------------------------------------------------------------------
    def in_process_figures(self) -> None:
        misc, amqp, profile = self.roles["misc"], self.services.amqp_url, self.profile
        self.results["figure6"] = reference.figure6(
            misc, amqp, profile.fsync_seconds, profile.reference_seconds
        )
        self.results["writepath"] = writepath.figure(
            self.roles["writepath"], amqp, profile.writepath_seconds, profile.writepath_rounds
        )
        self.results["figure5"] = heavy.figure5(misc, profile.heavy_bars, profile.heavy_repetitions)
        self.results["figure3"] = dispatch.figure3(
            amqp, misc.url, profile.dispatch_ids, profile.confirm_messages
        )

    def history_at_scale(self) -> None:
        """Figure 8. Its own postsave workers, on the run's vhost before any contender's: no
        other postsave message is out yet. Its databases are dropped as soon as it is done."""
        empty, full = self.roles["scale_empty"], self.roles["scale_full"]
        try:
            self.results["scale"] = scale.figure(
                empty, full, self.services.amqp_url, self.workdir, self.profile, self.settings_env()
            )
        finally:
            for database in (empty, full):
                self.services.drop_database(database)

    def contender_figures(self, contender: Contender) -> None:
        """Everything one contender takes part in, with only its own processes running."""
        name = contender.name
        step(f"{name}: starting its workers")
        contender.start()
        try:
            if isinstance(contender, Postsave) and contender.kind == "postsave":
                # What applications get, under the contender's name; the same SQL as the
                # other contenders' producers, as a reference row.
                self.throughput(contender, producer=USE_CASES)
                self.throughput(contender, label=SQL_REFERENCE)
            else:
                self.throughput(contender)
            if name in self.profile.latency_contenders:
                self.latency(contender)
            if isinstance(contender, Postsave) and name == "postsave-pg":
                self.results["figure4"][name] = flood.flood_postsave(
                    contender, self.services, self.profile.flood
                )
            if isinstance(contender, CeleryContender) and name == "direct":
                self.results["figure4"][name] = flood.flood_direct(
                    contender, self.services, self.profile.flood, self.profile.flood_limit_s
                )
            # The fault scenarios last: a contender that loses events breaks its invariant.
            if name in self.loss_contenders():
                rate, seconds = self.profile.kill_rate, self.profile.kill_seconds
                step(f"loss: {name}: {rate:.0f} events/s for {seconds:g} s")
                self.results["loss"][name] = scenarios.loss_run(contender, rate, seconds)
            if name in self.outage_contenders():
                self.results["outage"][name] = self.outage(contender)
            if isinstance(contender, Postsave) and name == "postsave-pg":
                # Last: it leaves this contender's database with many more bars.
                self.results["figure7"] = coalescing.figure7(
                    contender, self.profile.coalesce_bars, self.profile.coalesce_events
                )
        finally:
            step(f"{name}: stopping its workers")
            contender.stop()

    def throughput(
        self, contender: Contender, producer: str | None = None, label: str | None = None
    ) -> None:
        """Figure 1. `producer` feeds the same pipeline through another producer than the
        contender's own: a row of its own, `label` in brackets after the contender's name."""
        profile = self.profile
        events = (
            profile.embedded_events if contender.name == "postsave-embedded" else profile.events
        )
        name = contender.name if label is None else f"{contender.name} ({label})"
        runs = []
        before = contender.drift()
        for repetition in range(profile.repetitions):
            step(f"fig1: {name}: {events} events, run {repetition + 1}/{profile.repetitions}")
            runs.append(scenarios.throughput_run(contender, events, producer))
        rates = [run["events_per_s"] for run in runs]
        middle = sorted(runs, key=lambda run: run["events_per_s"])[len(runs) // 2]
        self.results["figure1"][name] = {
            **middle,
            "events_per_s": median(rates),
            "min_per_s": min(rates),
            "max_per_s": max(rates),
            "runs": runs,
            **contenders.invariant(contender, before),
            "description": contender.description
            + (
                ""
                if producer is None
                else f"; fed by the producer {producer!r} (bench/producer.py)"
            ),
        }

    def latency(self, contender: Contender) -> None:
        name = contender.name
        embedded = name == "postsave-embedded"
        threads = contender.threads
        contender.threads = 1 if embedded else 4  # enough clients to keep to the schedule
        postsave_pg = isinstance(contender, Postsave) and contender.kind == "postsave"
        producer = USE_CASES if postsave_pg else None  # as figure 1's headline row
        runs = []
        try:
            for rate, seconds in self.profile.loads:
                if embedded and rate > self.profile.embedded_max_load:
                    continue
                step(f"fig2: {name}: {rate:.0f} events/s offered for {seconds:g} s")
                runs.append(scenarios.latency_run(contender, rate, seconds, producer))
        finally:
            contender.threads = threads
        self.results["figure2"][name] = runs

    def outage(self, contender: Contender) -> dict[str, Any]:
        """Publishers through the proxy; postsave's relay worker and beat are restarted so.
        The last scenario of a contender: its workers are stopped right after."""
        rate, seconds = self.profile.kill_rate, self.profile.kill_seconds
        step(f"outage: {contender.name}: {rate:.0f} events/s for {seconds:g} s")
        contender.outage_url = self.proxy.url(self.services.amqp_url)
        if isinstance(contender, Postsave):
            contender.stop()
            contender.start()
        return scenarios.outage_run(contender, self.proxy, rate, seconds)

    def outage_contenders(self) -> tuple[str, ...]:
        if self.profile.name == "quick":
            return ("direct",)
        return ("direct", "postsave-pg")

    def loss_contenders(self) -> tuple[str, ...]:
        if self.profile.name == "quick":
            return ("direct",)
        return ("direct", "procrastinate", "postsave-pg")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below, unlike the default


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse(argv)
    profile = QUICK if args.quick else FULL
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="postsave-bench-"))
    step(f"profile {profile.name}; logs in {workdir}")
    started = time.monotonic()
    services = RunServices()
    ok = False
    run: Run | None = None
    try:
        run = Run(profile, services, workdir)
        run.prepare()
        run.in_process_figures()
        run.history_at_scale()
        for contender in run.contenders():
            run.contender_figures(contender)
        run.results["duration_s"] = time.monotonic() - started
        restarted = run.services.fingerprint() != run.fingerprint
        run.results["services_restarted_during_run"] = restarted
        print(report.tables(run.results), flush=True)
        json_path = args.out / f"results{suffix}.json"
        png_path = args.out / f"results{suffix}.png"
        step(f"writing {json_path} and {png_path}")
        report.write_json(run.results, json_path)
        plot.plot(run.results, png_path)
        ok = True
    finally:
        step("cleanup: dropping the run's databases and vhost")
        if run is not None:
            run.proxy.close()
        services.close()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)
    step(f"done in {elapsed():.0f}s")
    return 0
