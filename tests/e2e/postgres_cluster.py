"""PostgreSQL clusters of the tests' own, made with Debian's tools (`pg_createcluster`,
`pg_ctlcluster`, `pg_basebackup`, `pg_dropcluster`): a primary whose commits wait for a
synchronous standby, a standby streaming from it, a crash of the primary and the standby's
promotion. Each cluster has its own name, port and data directory; `Clusters.drop_all` drops
every one, also one SIGKILLed, and a test run killed before its teardown leaves clusters that
the next run drops. The shared server on 5432 is never touched.

The tests run as root and the servers as user postgres: the data directories live in a
directory of /tmp owned by postgres (pytest's own temporary directories are root's, 0700).
Every cluster listens on localhost only and trusts its connections, replication included."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from infrastructure.sql.migrate import upgrade
from tests.e2e.rabbitmq_node import free_port
from tests.services import unavailable

TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_basebackup")
CONFIG_ROOT = Path("/etc/postgresql")
SOCKET_DIR = Path("/var/run/postgresql")
OWNER = "postgres"
HOST = "127.0.0.1"
# The application_name a standby connects with, and the one the primary waits for.
STANDBY_NAME = "postsave_standby"
TIMEOUT_S = 60.0
# What every cluster here runs with (listening on localhost only, the default): streaming
# replication.
COMMON_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "max_connections": "100",
}


def pg_version() -> str:
    """The PostgreSQL version Debian's tools run (the newest in /etc/postgresql); or skip."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable(
            "pg_createcluster",
            f"{', '.join(missing)} not found (Debian's postgresql-common and postgresql)",
        )
    if os.geteuid() != 0:
        unavailable("pg_createcluster", "clusters of the tests' own need root to run as postgres")
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        unavailable("pg_createcluster", f"no {OWNER} user to own the clusters")
    versions = [p.name for p in CONFIG_ROOT.iterdir()] if CONFIG_ROOT.is_dir() else []
    versions = [v for v in versions if v.replace(".", "").isdigit()]
    if not versions:
        unavailable("pg_createcluster", f"no PostgreSQL version under {CONFIG_ROOT}")
    return max(versions, key=float)


def _run(command: Sequence[str], *, user: str | None = None, timeout_s: float = TIMEOUT_S) -> str:
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout_s, user=user
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (nobody reaped it yet) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Cluster:
    version: str
    name: str
    base: Path
    port: int = field(default_factory=free_port)
    created: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / self.name

    @property
    def logfile(self) -> Path:
        return self.base / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config_dir(self) -> Path:
        return CONFIG_ROOT / self.version / self.name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{OWNER}@{self.address}/{database}"

    def conninfo(self, database: str = "postgres", **more: str) -> str:
        options = {"host": HOST, "port": str(self.port), "user": OWNER, "dbname": database}
        options.update({"connect_timeout": "5", **more})
        return " ".join(f"{key}={value}" for key, value in options.items())

    def create(self, settings: Mapping[str, str], environment: Mapping[str, str] = {}) -> None:
        """`pg_createcluster`, not started, not started at boot, trusting local connections;
        the postmaster gets `environment` (Debian's per-cluster environment file)."""
        options = [item for key, value in settings.items() for item in ("-o", f"{key}={value}")]
        self.created = True  # from here on, drop it whatever happens
        _run(
            [
                "pg_createcluster",
                self.version,
                self.name,
                "-p",
                str(self.port),
                "-d",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "--start-conf",
                "manual",
                *options,
                "--",
                "--auth=trust",
            ]
        )
        if environment:
            lines = "".join(f"{key} = '{value}'\n" for key, value in environment.items())
            with (self.config_dir / "environment").open("a") as file:
                file.write(lines)

    def ctl(self, action: str) -> str:
        return _run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action])

    def start(self) -> None:
        self.ctl("start")
        self.wait_until(lambda: self.query("SELECT 1") == [(1,)], "accepts connections")

    def query(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo(database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def postsave_database(self, name: str = "postsave") -> str:
        """A database migrated to head (a standby streaming from here gets it too); its URL."""
        self.query(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        upgrade(url)
        return url

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM (postgresql.auto.conf, which pg_basebackup copies) and a reload."""
        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            for key, value in settings.items():
                connection.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(key), sql.Literal(value)
                    )
                )
            connection.execute("SELECT pg_reload_conf()")
        for key, value in settings.items():  # the postmaster rereads its files on its own time
            self.wait_until(partial(self.shows, key, value), f"{key} = {value}")

    def shows(self, key: str, value: str) -> bool:
        return self.query(f"SHOW {key}") == [(value,)]

    def sync_states(self) -> list[str]:
        """How each standby streaming from here stands: `sync`, `async`, ..."""
        return [row[0] for row in self.query("SELECT sync_state FROM pg_stat_replication")]

    def accepts_writes(self) -> bool:
        try:
            return self.query("SELECT pg_is_in_recovery()") == [(False,)]
        except psycopg.Error:
            return False

    def wait_until(
        self, found: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(psycopg.Error):
                if found():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not within {timeout_s} s: {what}\n{self.log()}")
            time.sleep(0.05)

    def pids(self, role: str = "") -> list[int]:
        """The postmaster (first) and every process it started that still runs; with `role`
        (`walsender`, say), those of its children whose title names it."""
        postmaster = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = f"postgres: {self.version}/{self.name}: {role}"  # cluster_name = '%v/%c'
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == postmaster:
                continue
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if command.startswith(children) or (not role and f"-D {self.datadir} " in command):
                    found.append(int(entry.name))
        ours = [postmaster] if postmaster is not None and not role else []
        return [pid for pid in ours + found if _alive(pid)]

    def stall_walsenders(self) -> None:
        """SIGSTOP the processes that stream WAL to standbys, as a link that stalls would: the
        primary goes on writing and the standbys fall behind (a synchronous one holds every
        commit back). The crash ends them."""
        walsenders = self.pids("walsender")
        assert walsenders, f"{self.name} streams to no standby"
        for pid in walsenders:
            os.kill(pid, signal.SIGSTOP)

    def crash(self) -> None:
        """SIGKILL the postmaster and every process of it, as a host that fails would: none
        lives on to finish a commit or to send more WAL."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT_S
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"{self.name}: {pids} outlived SIGKILL"
            time.sleep(0.01)

    def promote(self) -> None:
        """`pg_ctlcluster promote` (pg_ctl waits for the end of recovery), then until it
        takes writes."""
        self.ctl("promote")
        self.wait_until(self.accepts_writes, "accepts writes after promotion")

    def drop(self) -> None:
        """`pg_dropcluster --stop`; then SIGKILL whatever of it still runs (it crashed, was
        half-made, or lost its data directory: pg_ctl cannot stop it) and drop it again if
        need be. Never raises: a teardown."""
        if not self.created:
            return
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name],
            capture_output=True,
            timeout=TIMEOUT_S,
        )
        if self.pids():  # crashed, half-made, or its data directory gone: pg_ctl cannot stop it
            with contextlib.suppress(AssertionError):
                self.crash()
        if self.config_dir.exists():
            subprocess.run(
                ["pg_dropcluster", self.version, self.name], capture_output=True, timeout=TIMEOUT_S
            )
        # A crashed postmaster leaves its socket and lock file in the shared socket directory.
        lock = SOCKET_DIR / f".s.PGSQL.{self.port}.lock"
        with contextlib.suppress(OSError, IndexError):
            if lock.read_text().splitlines()[1] == str(self.datadir):
                (SOCKET_DIR / f".s.PGSQL.{self.port}").unlink(missing_ok=True)
                lock.unlink()
        # And the external_pid_file Debian's configuration names.
        (SOCKET_DIR / f"{self.version}-{self.name}.pid").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.config_dir)  # only if pg_dropcluster could not
        self.created = False

    def log(self, tail: int = 3000) -> str:
        try:
            return f"--- {self.logfile.name}\n{self.logfile.read_text(errors='replace')[-tail:]}"
        except OSError:
            return ""


NAME_PREFIX = "postsave-test-"
BASE_PREFIX = "postsave-pg-"
_ORPHAN = re.compile(rf"^{NAME_PREFIX}(\d+)-[0-9a-f]+-")


def drop_orphans(version: str) -> None:
    """Drop the clusters of test processes that are gone (killed before their teardown)."""
    bases = set()
    for config_dir in sorted((CONFIG_ROOT / version).glob(f"{NAME_PREFIX}*")):
        found = _ORPHAN.match(config_dir.name)
        if found is None or _alive(int(found[1])):
            continue
        settings = {}
        with contextlib.suppress(OSError):
            for line in (config_dir / "postgresql.conf").read_text().splitlines():
                key, equals, value = line.partition("=")
                if equals and not key.startswith("#"):
                    settings[key.strip()] = value.split("#")[0].strip().strip("'")
        datadir = Path(settings.get("data_directory", tempfile.gettempdir()))
        port = int(settings.get("port", "0"))
        base = datadir.parent
        Cluster(version, config_dir.name, base, port=port, created=True).drop()
        bases.add(base)
    for base in bases:  # once every cluster in it is dropped
        if base.name.startswith(BASE_PREFIX):
            shutil.rmtree(base, ignore_errors=True)


class Clusters:
    """Clusters of one test, under one directory: `drop_all` drops each and the directory."""

    def __init__(self) -> None:
        self.version = pg_version()
        drop_orphans(self.version)
        owner = pwd.getpwnam(OWNER)
        self.base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX))
        os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self.base.chmod(0o755)  # root reads the logs; postgres writes its data and logs
        self.made: list[Cluster] = []
        # The test process's id in the name: a run killed before its teardown leaves clusters
        # that the next run finds and drops.
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _new(self, role: str) -> Cluster:
        cluster = Cluster(self.version, f"{self.prefix}-{role}{len(self.made)}", self.base)
        self.made.append(cluster)
        return cluster

    def primary(self, synchronous_standby: str | None = STANDBY_NAME, **settings: str) -> Cluster:
        """A started primary; with `synchronous_standby`, each commit waits until that
        standby has flushed it (synchronous_commit's default, on). The setting is in the
        cluster's postgresql.conf, which a standby made by pg_basebackup does not copy: a
        promoted standby waits for nobody."""
        cluster = self._new("primary")
        # pg_createcluster quotes the value where postgresql.conf needs it.
        sync = {"synchronous_standby_names": synchronous_standby} if synchronous_standby else {}
        cluster.create({**COMMON_SETTINGS, **sync, **settings})
        cluster.start()
        return cluster

    def standby(
        self, primary: Cluster, name: str = STANDBY_NAME, environment: Mapping[str, str] = {}
    ) -> Cluster:
        """A started standby streaming from `primary` as `name` (its application_name), made
        by `pg_basebackup -R`; returns once the primary streams to it."""
        cluster = self._new("standby")
        cluster.create(COMMON_SETTINGS, environment)
        shutil.rmtree(cluster.datadir)  # pg_basebackup fills an empty one
        conninfo = primary.conninfo(application_name=name)
        _run(
            [
                "pg_basebackup",
                "-d",
                conninfo,
                "-D",
                str(cluster.datadir),
                "-R",  # standby.signal, and primary_conninfo with the application_name
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            user=OWNER,
        )
        cluster.start()
        primary.wait_until(
            lambda: (
                primary.query(
                    f"SELECT state FROM pg_stat_replication WHERE application_name = '{name}'"
                )
                == [("streaming",)]
            ),
            f"streams to {name}",
        )
        return cluster

    def drop_all(self) -> None:
        for cluster in reversed(self.made):
            cluster.drop()
        shutil.rmtree(self.base, ignore_errors=True)
