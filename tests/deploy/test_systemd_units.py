"""The systemd units in deploy/: systemd accepts them, their sandbox stays tight, a stop gives
Celery's warm shutdown the time its tasks may take, and Celery accepts their command lines.

The units name the production paths (/opt/postsave, its .venv). `systemd-analyze verify` checks
that every ExecStart= binary exists, so the tests run on copies that point at this checkout and
at the virtual environment running the tests instead. The EnvironmentFile= need not exist:
verify does not read it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.cli.main import build_parser
from infrastructure.settings import Settings
from tasks.limits import poll_time_limit_s, recalc_time_limit_s
from tests.services import IN_CI

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROD_ROOT = "/opt/postsave"
PROD_BIN = f"{PROD_ROOT}/.venv/bin"

RELAY = "postsave-relay.service"
WORKER_TEMPLATE = "postsave-worker@.service"
WORKER = "postsave-worker@1.service"
BEAT = "postsave-beat.service"
MIGRATE = "postsave-migrate.service"
CHECK = "postsave-check.service"
CHECK_TIMER = "postsave-check.timer"
METRICS = "postsave-metrics.service"
UNIT_FILES = (RELAY, WORKER_TEMPLATE, BEAT, MIGRATE, CHECK, CHECK_TIMER, METRICS)

# `systemd-analyze security`'s overall exposure, 0.0 (locked down) to 10.0 (exposed).
MAX_EXPOSURE = 4.0
# After a task's hard time limit, the Celery main process still has to collect the pool and
# close its connections before it exits.
SHUTDOWN_MARGIN_S = 10.0

# Off CI a missing systemd-analyze skips; with CI=true these tests run, and fail without it.
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not IN_CI,
    reason="systemd-analyze is not installed (it comes with systemd)",
)


@dataclass
class Unit:
    """A unit file as systemd reads it: [Section] Key=value lines, `\\` continuations joined."""

    name: str
    entries: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, name: str | None = None) -> Unit:
        unit = cls(name or path.name)
        section = ""
        pending = ""
        for raw in path.read_text().splitlines():
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, _, value = line.partition("=")
            unit.entries.setdefault(section, []).append((key.strip(), value.strip()))
        return unit

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.entries.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str:
        found = self.values(section, key)
        assert len(found) == 1, f"{self.name}: expected one [{section}] {key}=, found {found}"
        return found[0]


def unit(name: str) -> Unit:
    """A unit of deploy/; an instance name reads its template."""
    template = re.sub(r"@[^.]+\.", "@.", name)
    return Unit.read(DEPLOY / template, name)


def timespan_s(text: str) -> float:
    """A systemd time span ("300", "90s", "5min", "1min 30s") in seconds."""
    factors = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts and "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    for number, suffix in parts:
        total += float(number) * factors[suffix]
    return total


def exec_start_argv(u: Unit) -> list[str]:
    """ExecStart= as systemd would run it for instance 1 on host `host`: specifiers and
    ${VAR} from the unit's Environment= replaced (one word each), $VAR split on whitespace."""
    env = dict(v.split("=", 1) for v in u.values("Service", "Environment"))
    instance = u.name.partition("@")[2].partition(".")[0]
    specifiers = {"%H": "host", "%i": instance, "%%": "%"}
    argv: list[str] = []
    for word in u.value("Service", "ExecStart").split():
        word = re.sub(r"%[Hi%]", lambda m: specifiers[m.group(0)], word)
        word = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
        argv.extend(env[word[1:]].split() if re.fullmatch(r"\$\w+", word) else [word])
    return argv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit files with /opt/postsave/.venv/bin pointing at the environment running the
    tests, and /opt/postsave at this checkout."""
    where = tmp_path_factory.mktemp("units")
    bin_dir = str(Path(sys.executable).parent)
    for name in UNIT_FILES:
        text = (DEPLOY / name).read_text()
        text = text.replace(PROD_BIN, bin_dir).replace(PROD_ROOT, str(REPO))
        (where / name).write_text(text)
    return where


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.fail(
            "systemd-analyze is not installed (apt-get install systemd): CI=true, so the unit "
            "tests must run, not skip",
            pytrace=False,
        )
    return subprocess.run(
        ["systemd-analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


@needs_systemd_analyze
def test_systemd_verify_accepts_every_unit(installed: Path) -> None:
    paths = [
        str(installed / name)
        for name in (RELAY, WORKER, BEAT, MIGRATE, CHECK, CHECK_TIMER, METRICS)
    ]
    # --recursive-errors=no: only our units count, not the host's units they name.
    done = systemd_analyze("verify", "--man=no", "--generators=no", "--recursive-errors=no", *paths)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    # Some findings are only warnings, with exit status 0: an unknown key or a value systemd
    # cannot parse (a misspelt sandbox option, which systemd would ignore). Any output counts.
    assert output == ""


@needs_systemd_analyze
@pytest.mark.parametrize("name", [RELAY, WORKER, BEAT, CHECK, MIGRATE, METRICS])
def test_sandbox_exposure_is_low(installed: Path, name: str) -> None:
    done = systemd_analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--threshold={round(MAX_EXPOSURE * 10)}",  # on the 0-100 scale; 4.0 prints as 40
        str(installed / name),
    )
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    exposure = float(found.group(1))
    # What adds to the exposure, to say what to fix.
    exposed = "\n".join(re.findall(r"^.*\S\s+\d\.\d$", done.stdout, re.MULTILINE))
    assert exposure <= MAX_EXPOSURE, exposed
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.search(r"Unknown|Failed|ignoring", done.stderr), done.stderr


def test_stop_timeouts_outlast_the_hard_time_limits(celery_facts: dict[str, object]) -> None:
    """systemd SIGKILLs a unit TimeoutStopSec after SIGTERM; Celery's warm shutdown lets the
    running task go on until its hard time limit. The limits are the tasks' own (defaults)."""
    limits = celery_facts["time_limits"]
    assert isinstance(limits, dict)
    defaults = Settings()
    # The units' comments quote these sums.
    assert limits["poll_outbox"] == poll_time_limit_s(defaults) + 10 == 36
    assert limits["recalculate_bars"] == recalc_time_limit_s(defaults) + 30 == 345
    for name, task in ((RELAY, "poll_outbox"), (WORKER, "recalculate_bars")):
        u = unit(name)
        stop_s = timespan_s(u.value("Service", "TimeoutStopSec"))
        assert stop_s >= limits[task] + SHUTDOWN_MARGIN_S, (name, stop_s, limits[task])
        # SIGTERM to the Celery main process only: the pool's processes finish their tasks.
        assert u.value("Service", "KillMode") == "mixed", name
        assert u.value("Service", "KillSignal") == "SIGTERM", name


# Run in a subprocess, in an empty directory, on the default settings: importing `tasks` builds
# a Celery app, connects signal handlers and creates ./var, none of which belongs in the test
# process. Each command line goes through Celery's own command-line parser (option names, value
# types and choices); only the worker's and beat's final step, starting, is replaced.
CELERY_PROBE = """
import json, sys
import click
from celery.bin.beat import beat
from celery.bin.celery import celery
from celery.bin.worker import worker
from celery.utils.imports import symbol_by_name

parsed = []

@click.pass_context
def record(ctx, **params):
    if params.get("scheduler"):
        scheduler = symbol_by_name(params["scheduler"])
        params["scheduler_mro"] = [f"{c.__module__}.{c.__qualname__}" for c in scheduler.__mro__]
    parsed.append({"command": ctx.info_name, "extra_args": ctx.args, "params": params})

worker.callback = record
beat.callback = record
for argv in json.loads(sys.argv[1]):
    try:
        celery.main(args=argv, prog_name="celery", standalone_mode=False)
    except click.ClickException as error:
        sys.exit(f"celery {' '.join(argv)}: {error.format_message()}")

from tasks.poll import poll_outbox
from tasks.recalculation import recalculate_bars

limits = {t.name: t.time_limit for t in (poll_outbox, recalculate_bars)}
print(json.dumps({"parsed": parsed, "time_limits": limits}, default=str))
"""

COMMAND_UNITS = (RELAY, WORKER, BEAT)


@pytest.fixture(scope="module")
def celery_facts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    argvs = []
    for name in COMMAND_UNITS:
        argv = exec_start_argv(unit(name))
        assert argv[0] == f"{PROD_BIN}/celery", (name, argv)
        argvs.append(argv[1:])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTSAVE_", "CELERY_"))}
    done = subprocess.run(
        [sys.executable, "-c", CELERY_PROBE, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path_factory.mktemp("celery"),
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    facts["by_unit"] = dict(zip(COMMAND_UNITS, facts["parsed"], strict=True))
    yield facts


def test_celery_accepts_the_command_lines(celery_facts: dict[str, object]) -> None:
    by_unit = celery_facts["by_unit"]
    assert isinstance(by_unit, dict)
    for name in COMMAND_UNITS:
        assert by_unit[name]["extra_args"] == [], name

    relay = by_unit[RELAY]
    assert relay["command"] == "worker"
    assert relay["params"]["queues"] == [POLL_QUEUE]
    assert relay["params"]["concurrency"] == 1
    assert relay["params"]["hostname"] == "relay@host"

    worker = by_unit[WORKER]
    assert worker["command"] == "worker"
    assert worker["params"]["queues"] == [RECALC_QUEUE]
    assert worker["params"]["concurrency"] == 2  # Environment=WORKER_CONCURRENCY=2
    assert worker["params"]["hostname"] == "recalc1@host"

    # Beat's file system is read-only (ProtectSystem=strict, no state directory): its
    # scheduler must keep the schedule in memory, not in a file (celery.beat.PersistentScheduler).
    beat = by_unit[BEAT]
    assert beat["command"] == "beat"
    mro = beat["params"]["scheduler_mro"]
    assert "celery.beat.Scheduler" in mro
    assert "celery.beat.PersistentScheduler" not in mro
    assert not unit(BEAT).values("Service", "StateDirectory")
    assert not unit(BEAT).values("Service", "ReadWritePaths")


def test_exec_start_reading_expands_like_systemd() -> None:
    """The parser above, on the worker template: continuation lines, %i, %H, ${VAR}."""
    argv = exec_start_argv(unit("postsave-worker@7.service"))
    assert argv[:4] == [f"{PROD_BIN}/celery", "-A", "tasks", "worker"]
    assert "--concurrency=2" in argv
    assert "--hostname=recalc7@host" in argv
    assert timespan_s("1min 30s") == 90
    assert timespan_s("300") == 300


@pytest.mark.parametrize(("name", "command"), [(CHECK, "check"), (METRICS, "metrics")])
def test_postsave_accepts_the_command_lines(name: str, command: str) -> None:
    argv = exec_start_argv(unit(name))
    assert argv[0] == f"{PROD_BIN}/postsave", (name, argv)

    args = build_parser().parse_args(argv[1:])  # a wrong argument raises UsageError

    assert args.command == command


CREDENTIAL_UNITS = {
    # unit: (its database credential, its broker credential), by component
    MIGRATE: ("owner", None),
    RELAY: ("worker", "relay"),
    WORKER: ("worker", "worker"),
    BEAT: (None, "beat"),
    CHECK: ("monitor", "monitor"),
    METRICS: ("monitor", None),
}


def credentials_of(u: Unit) -> dict[str, str]:
    """LoadCredential=NAME:PATH, by name."""
    return dict(value.split(":", 1) for value in u.values("Service", "LoadCredential"))


def environment_of(u: Unit, credentials_dir: Path) -> dict[str, str]:
    """Environment= as the unit's process gets it, %d being its credentials directory."""
    pairs = (value.split("=", 1) for value in u.values("Service", "Environment"))
    return {key: value.replace("%d", str(credentials_dir)) for key, value in pairs}


@pytest.mark.parametrize("name", sorted(CREDENTIAL_UNITS))
def test_each_unit_reads_its_own_urls_as_credentials(name: str) -> None:
    """No URL, so no password, in a unit or the environment file: each unit loads the
    credentials of its component, and the settings name the files systemd hands over."""
    database, broker = CREDENTIAL_UNITS[name]
    u = unit(name)
    expected = {}
    if database:
        expected["database-url"] = f"/etc/postsave/credentials/{database}.database-url"
    if broker:
        expected["broker-url"] = f"/etc/postsave/credentials/{broker}.broker-url"
    assert credentials_of(u) == expected
    environment = environment_of(u, Path("/run/credentials/x"))
    files = {key: value for key, value in environment.items() if key.endswith("_URL_FILE")}
    assert files == {
        **({"POSTSAVE_DATABASE_URL_FILE": "/run/credentials/x/database-url"} if database else {}),
        **({"POSTSAVE_BROKER_URL_FILE": "/run/credentials/x/broker-url"} if broker else {}),
    }
    assert not any(key in environment for key in ("POSTSAVE_DATABASE_URL", "POSTSAVE_BROKER_URL"))
    example = (DEPLOY / "postsave.env.example").read_text().splitlines()
    assert not [line for line in example if re.match(r"POSTSAVE_(DATABASE|BROKER)_URL", line)]


@pytest.mark.postgres
def test_the_check_unit_works_from_its_credentials(pg_url: str, tmp_path: Path) -> None:
    """`postsave check` with the unit's own environment and the files systemd would copy into
    its credentials directory: it finds the database through them."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "database-url").write_text(pg_url + "\n")
    (credentials / "broker-url").write_text("amqp://guest:guest@127.0.0.1:5672//\n")
    u = unit(CHECK)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("POSTSAVE_DATABASE_URL", "POSTSAVE_BROKER_URL")
    }
    argv = exec_start_argv(u)
    argv[0] = str(Path(sys.executable).parent / "postsave")
    done = subprocess.run(
        argv,
        env={**env, **environment_of(u, credentials)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("database: ok, postgresql+psycopg://"), done.stderr
