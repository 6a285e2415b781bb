"""What the results came from: the machine and the versions, printed beside every table."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg

from tests import services


def _version(module: str) -> str:
    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def machine(dsn: str) -> dict[str, Any]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    try:
        status = services.rabbitmqctl("-q", "version").strip()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        status = "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
        "rabbitmq": status or "?",
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "sqlalchemy": _version("sqlalchemy"),
        "procrastinate": _version("procrastinate"),
    }
