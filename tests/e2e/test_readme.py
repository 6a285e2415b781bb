"""Every command of the README, run as written: its shell blocks by bash from the checkout, its
Python blocks as an application would run them.

The README's examples name the local servers `make test` uses: the database `postsave` on
PostgreSQL at 127.0.0.1 and RabbitMQ's default vhost. Those two names are the only change made
here: each run gets a database and a vhost of its own, so that it never touches real ones."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryFile

import pytest
from sqlalchemy import create_engine, text

from infrastructure.broker.celery_app import make_celery_app
from infrastructure.settings import Settings
from infrastructure.sql.migrate import upgrade
from tests import services
from tests.rabbitmq import purge_app_queues

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent

README_DATABASE = "postsave"
README_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postsave"
README_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
# What the README shows but this suite cannot run: it is this suite.
NOT_RUN = {"make test": "the test suite itself, which runs this test"}
LONG_RUNNING = "each line runs until stopped"


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    note: str  # the `<!-- readme-test: ... -->` comment just above it, if any
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    pattern = re.compile(
        r"(?:<!-- readme-test: (?P<note>[^>]*?) -->\n)?^```(?P<language>\w+)\n(?P<text>.*?)^```$",
        re.MULTILINE | re.DOTALL,
    )
    return [
        Block(m["language"], m["text"], m["note"] or "", text.count("\n", 0, m.start()) + 1)
        for m in pattern.finditer(text)
    ]


@dataclass
class Servers:
    database: str
    database_url: str
    broker_url: str

    def own(self, text: str) -> str:
        """The README's text with this run's database and vhost."""
        return text.replace(README_DATABASE_URL, self.database_url).replace(
            README_BROKER_URL, self.broker_url
        )


@pytest.fixture
def servers(amqp_url: str) -> Iterator[Servers]:
    services.check_postgres()
    database = f"postsave_readme_{uuid.uuid4().hex[:8]}"
    url = README_DATABASE_URL.replace(f"/{README_DATABASE}", f"/{database}")
    purge_app_queues(make_celery_app(Settings(database_url=url, broker_url=amqp_url)))
    yield Servers(database, url, amqp_url)
    services.drop_database(database)


def shell_env(activated: bool = False) -> dict[str, str]:
    """A user's shell: no POSTSAVE_* setting, and .venv on the PATH only once activated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTSAVE_", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join([str(VENV_BIN), *path] if activated else path)
    return env


def run_shell(
    script: str, env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """The script's exit status and output. Output goes to files, not pipes: a background job
    the script leaves (a worker, beat) holds no pipe open after the script ends, and whatever
    is left in its session is killed then, or when `timeout_s` is up (returncode None)."""
    with TemporaryFile() as out, TemporaryFile() as err:
        process = subprocess.Popen(
            ["bash", "-c", f"set -euo pipefail\n{script}"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            returncode: int | None = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        if returncode is None:
            stderr += f"\n(timed out after {timeout_s} s)"
        return subprocess.CompletedProcess(
            process.args, returncode, out.read().decode(errors="replace"), stderr
        )


def test_the_readme_has_the_blocks_these_tests_run() -> None:
    blocks = readme_blocks()
    shell = [b for b in blocks if b.language == "sh"]
    assert len(shell) == 3, [str(b) for b in blocks]
    assert len([b for b in blocks if b.language == "python"]) == 3
    assert {b.language for b in blocks} == {"sh", "python"}, "a block no test runs"
    assert "make demo" in shell[0].text
    assert README_DATABASE_URL in shell[1].text and README_BROKER_URL in shell[1].text
    assert shell[2].note == LONG_RUNNING


def test_the_two_commands_make_demo(tmp_path: Path) -> None:
    [block] = [b for b in readme_blocks() if "make demo" in b.text]
    commands = [line.split("#")[0].strip() for line in block.text.splitlines()]
    assert commands == ["make demo", "make test"]
    run = [c for c in commands if c not in NOT_RUN]

    done = run_shell("\n".join(run), shell_env(), timeout_s=240)

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^verify: ok, all \d+ bars", done.stdout, re.MULTILINE), done.stdout


def test_running_against_postgresql_and_rabbitmq(servers: Servers) -> None:
    [block] = [b for b in readme_blocks() if "createdb" in b.text]
    script = servers.own(block.text).replace(
        f"createdb -h 127.0.0.1 -U postgres {README_DATABASE}\n",
        f"createdb -h 127.0.0.1 -U postgres {servers.database}\n",
    )
    assert servers.database in script and servers.broker_url in script

    done = run_shell(script, shell_env(), timeout_s=180)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    verified = re.findall(
        r"^ok: all 5 bars \(1 part\) equal a replay .*, and weight \* 30 ",
        done.stdout,
        re.MULTILINE,
    )
    assert len(verified) == 2, output  # before the rebuild and after it
    assert "relay: ok, last batch" in done.stdout, output
    assert re.search(r"^processed\s+3$", done.stdout, re.MULTILINE), output
    assert re.search(r"^parts\s+1$", done.stdout, re.MULTILINE), output
    assert "rebuilt 1 part through domain.recalculation:recalculate" in done.stdout, output


def test_using_it_from_your_application(servers: Servers, tmp_path: Path) -> None:
    """The Python blocks, in order, as an application's own scripts (in a directory of its own)
    on a migrated database; `orders` stands for one of the application's tables."""
    services.create_database(name=servers.database)
    upgrade(servers.database_url)
    engine = create_engine(servers.database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (foo_id BIGINT NOT NULL)"))
    env = {
        **shell_env(activated=True),
        "POSTSAVE_DATABASE_URL": servers.database_url,
        "POSTSAVE_BROKER_URL": servers.broker_url,
    }
    blocks = [b for b in readme_blocks() if b.language == "python"]
    for block in blocks:
        script = tmp_path / f"readme_{block.line}.py"
        script.write_text(servers.own(block.text))
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{block}:\n{done.stdout}{done.stderr}"

    with engine.connect() as connection:
        orders = connection.execute(text("SELECT count(*) FROM orders")).scalar_one()
        states = dict(
            connection.execute(text("SELECT state, count(*) FROM foos GROUP BY state")).all()
        )
    engine.dispose()
    assert orders == 1  # the application's row, committed with the foo
    assert states == {"cancelled": 1, "completed": 1}
    assert not (tmp_path / "var").exists()  # all of it went to PostgreSQL and RabbitMQ


def test_deploying_workers(servers: Servers, tmp_path: Path) -> None:
    [block] = [b for b in readme_blocks() if b.note == LONG_RUNNING]
    services.create_database(name=servers.database)
    upgrade(servers.database_url)
    env = {
        **shell_env(activated=True),
        "POSTSAVE_DATABASE_URL": servers.database_url,
        "POSTSAVE_BROKER_URL": servers.broker_url,
    }
    started = []
    for number, line in enumerate(block.text.splitlines()):
        log = tmp_path / f"line-{number}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((line, process, log))
    try:
        for line, process, log in started:
            ready = "beat: Starting" if " beat" in line else "ready."
            deadline = time.monotonic() + 60
            while ready not in log.read_text(errors="replace"):
                assert process.poll() is None, f"{line!r} exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{line!r} not ready:\n{log.read_text()}"
                time.sleep(0.2)
    finally:
        for _, process, _ in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process, _ in started:
            process.wait(timeout=60)
