"""Start and stop `celery worker` / `celery beat` processes (the demo, the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from infrastructure.files import create_private_file


def celery_command(*args: str, app: str = "tasks") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_command(
    *,
    app: str = "tasks",
    queues: Sequence[str] = (),
    concurrency: int = 2,
    pool: str = "prefork",
    name: str = "postsave",
    loglevel: str = "INFO",
) -> list[str]:
    args = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--hostname={name}@%h",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={loglevel}",
    ]
    if queues:
        args.append(f"--queues={','.join(queues)}")
    return celery_command(*args, app=app)


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    queues: Sequence[str] = (),
    concurrency: int = 2,
    pool: str = "prefork",
    name: str = "postsave",
    loglevel: str = "INFO",
) -> subprocess.Popen[bytes]:
    command = worker_command(
        queues=queues, concurrency=concurrency, pool=pool, name=name, loglevel=loglevel
    )
    return _start(command, env, log_path)


def start_beat(
    env: Mapping[str, str], log_path: Path, loglevel: str = "INFO"
) -> subprocess.Popen[bytes]:
    return _start(celery_command("beat", f"--loglevel={loglevel}"), env, log_path)


def _start(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    create_private_file(log_path)  # 0600 in 0700 directories, unless it exists already
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM (a warm shutdown for Celery), then SIGKILL the whole group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and its pool children, as a crash would."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
