"""Settings from the environment. The defaults run everything embedded under ./var/."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from domain.backoff import RetryPolicy
from domain.errors import DomainError
from domain.outbox import RelayLimits
from domain.parts import DEFAULT_PART_SIZE
from domain.recalculation import EXAMPLE_RECALCULATION
from domain.retention import parse_duration
from infrastructure.urls import (
    broker_url_problem,
    database_url_problem,
    is_amqp_url,
    redact_url,
    sqlalchemy_database_url,
)

T = TypeVar("T", int, float)

VAR_DIR = Path("var")
DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'postsave.db'}"
DEFAULT_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'broker.db'}"
LOG_FORMATS = ("text", "json")
QUEUE_TYPES = ("classic", "quorum")


class SettingsError(ValueError):
    """A POSTSAVE_* environment variable has a value postsave cannot use."""


def _number(
    env: Mapping[str, str],
    name: str,
    default: T,
    cast: Callable[[str], T],
    zero_means: str | None = None,
) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value == 0 and zero_means is not None:
        return value
    if not math.isfinite(value) or value <= 0:
        also = "" if zero_means is None else f", or 0 for {zero_means}"
        raise SettingsError(f"{name}={raw!r} must be a finite number greater than 0{also}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise SettingsError(f"{name}={raw!r} is not a flag (use 1 or 0)")
    return raw in ("1", "true", "yes", "on")


def log_format_from_env(env: Mapping[str, str]) -> str:
    """POSTSAVE_LOG_FORMAT: `text` (Celery's usual lines) or `json` (one object per line)."""
    raw = env.get("POSTSAVE_LOG_FORMAT", "")
    value = raw.strip().lower() or LOG_FORMATS[0]
    if value not in LOG_FORMATS:
        raise SettingsError(f"POSTSAVE_LOG_FORMAT={raw!r} is not a log format (use text or json)")
    return value


def retention_from_env(env: Mapping[str, str]) -> float | None:
    """POSTSAVE_RETENTION: how long finished events stay in the log; unset keeps them all."""
    raw = env.get("POSTSAVE_RETENTION", "")
    if raw.strip() == "":
        return None
    try:
        return parse_duration(raw)
    except DomainError as error:
        raise SettingsError(f"POSTSAVE_RETENTION={error}; unset it to keep every event") from None


def queue_type_from_env(env: Mapping[str, str], broker_url: str) -> str:
    """POSTSAVE_QUEUE_TYPE: `classic` or `quorum` (replicated over a RabbitMQ cluster)."""
    raw = env.get("POSTSAVE_QUEUE_TYPE", "")
    value = raw.strip().lower() or QUEUE_TYPES[0]
    if value not in QUEUE_TYPES:
        raise SettingsError(
            f"POSTSAVE_QUEUE_TYPE={raw!r} is not a queue type (use classic or quorum)"
        )
    if value == "quorum" and not is_amqp_url(broker_url):
        raise SettingsError(
            "POSTSAVE_QUEUE_TYPE=quorum needs RabbitMQ: set POSTSAVE_BROKER_URL to amqp:// URLs, "
            "or unset POSTSAVE_QUEUE_TYPE"
        )
    return value


@dataclass(frozen=True)
class BrokerTls:
    """amqps://: the CA that signs the broker's certificate (the system's when None), and a
    client certificate with its key, when the broker asks for one."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def broker_tls_from_env(env: Mapping[str, str], broker_url: str) -> BrokerTls | None:
    """POSTSAVE_BROKER_CA_FILE, POSTSAVE_BROKER_CERT_FILE, POSTSAVE_BROKER_KEY_FILE. Every
    amqps:// connection verifies the broker's certificate and host name; these settings with
    an amqp:// URL are refused, never read as a wish for plain text."""
    files = {
        name: env.get(f"POSTSAVE_BROKER_{name.upper()}", "").strip() or None
        for name in ("ca_file", "cert_file", "key_file")
    }
    urls = [url for url in broker_url.split(";") if url.strip()]
    tls = bool(urls) and all(url.strip().startswith("amqps://") for url in urls)
    if not tls:
        given = [f"POSTSAVE_BROKER_{name.upper()}" for name, path in files.items() if path]
        if given:
            raise SettingsError(
                f"{given[0]} is set, but POSTSAVE_BROKER_URL is not amqps:// (every URL of a "
                "list): use amqps://, postsave never falls back to plain text"
            )
        return None
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise SettingsError(
            "POSTSAVE_BROKER_CERT_FILE and POSTSAVE_BROKER_KEY_FILE go together: set both "
            "for a client certificate, or neither"
        )
    for name, path in files.items():
        if path is not None and not Path(path).is_file():
            raise SettingsError(
                f"POSTSAVE_BROKER_{name.upper()}={path!r} is not a file this process can see"
            )
    return BrokerTls(**files)


def recalculation_from_env(env: Mapping[str, str]) -> str:
    """POSTSAVE_RECALCULATION: `module:function`, the team's heavy step (loaded by bootstrap)."""
    raw = env.get("POSTSAVE_RECALCULATION", "").strip()
    if not raw:
        return EXAMPLE_RECALCULATION
    module, _, function = raw.partition(":")
    if not (
        module
        and function
        and all(part.isidentifier() for part in module.split("."))
        and function.isidentifier()
    ):
        raise SettingsError(
            f"POSTSAVE_RECALCULATION={raw!r} is not module:function "
            f"(such as {EXAMPLE_RECALCULATION})"
        )
    return raw


def _url(
    env: Mapping[str, str], name: str, default: str, problem: Callable[[str], str | None]
) -> str:
    url = _secret(env, name) or default
    wrong = problem(url)
    if wrong is not None:
        raise SettingsError(f"{name}={redact_url(url)!r} {wrong}")  # never the password
    return url


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME, or what the file NAME_FILE names holds (systemd's LoadCredential=, a container's
    secret), so that a password need not travel in the environment. One or the other."""
    inline, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if path is None:
        return inline
    if inline is not None:
        raise SettingsError(f"{name} and {name}_FILE are both set: set one of them")
    try:
        held = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or str(error)
        raise SettingsError(
            f"{name}_FILE={path!r} cannot be read ({why}); check the path and that this user "
            "may read it"
        ) from None
    if not held:
        raise SettingsError(f"{name}_FILE={path!r} is empty; it must hold the URL")
    return held


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    poll_interval_s: float = 1.0
    # The domain's defaults, in one place.
    batch_size: int = RelayLimits.batch_size
    max_in_flight: int = RelayLimits.max_in_flight
    lease_seconds: float = RelayLimits.lease_seconds
    max_attempts: int = RetryPolicy.max_attempts
    coalesce_limit: int = 500
    nudge: bool = True
    # Every wait is bounded: a broker connect, publish or confirm (a blocked broker never
    # answers), and a database statement, lock waits included.
    broker_timeout_s: float = 10.0
    statement_timeout_s: float = 15.0
    log_format: str = LOG_FORMATS[0]
    retention_s: float | None = None  # beat prunes finished events older than this
    prune_interval_s: float = 3_600.0  # how often, when retention_s is set
    # The heavy step: the team's recalculation, bars per part, and the longest a pass may run.
    recalculation: str = EXAMPLE_RECALCULATION
    queue_type: str = QUEUE_TYPES[0]
    part_size: int = DEFAULT_PART_SIZE
    part_time_limit_s: float = 300.0
    broker_tls: BrokerTls | None = None  # amqps:// only

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        broker_url = _url(env, "POSTSAVE_BROKER_URL", DEFAULT_BROKER_URL, broker_url_problem)
        database_url = _url(
            env, "POSTSAVE_DATABASE_URL", DEFAULT_DATABASE_URL, database_url_problem
        )
        return cls(
            database_url=sqlalchemy_database_url(database_url),
            broker_url=broker_url,
            queue_type=queue_type_from_env(env, broker_url),
            broker_tls=broker_tls_from_env(env, broker_url),
            poll_interval_s=_number(env, "POSTSAVE_POLL_INTERVAL", cls.poll_interval_s, float),
            batch_size=_number(env, "POSTSAVE_BATCH_SIZE", cls.batch_size, int),
            max_in_flight=_number(env, "POSTSAVE_MAX_IN_FLIGHT", cls.max_in_flight, int),
            lease_seconds=_number(env, "POSTSAVE_LEASE_SECONDS", cls.lease_seconds, float),
            max_attempts=_number(env, "POSTSAVE_MAX_ATTEMPTS", cls.max_attempts, int),
            coalesce_limit=_number(
                env,
                "POSTSAVE_COALESCE_LIMIT",
                cls.coalesce_limit,
                int,
                zero_means="one pass per event",
            ),
            nudge=_flag(env, "POSTSAVE_NUDGE", cls.nudge),
            broker_timeout_s=_number(env, "POSTSAVE_BROKER_TIMEOUT", cls.broker_timeout_s, float),
            statement_timeout_s=_number(
                env, "POSTSAVE_STATEMENT_TIMEOUT", cls.statement_timeout_s, float
            ),
            log_format=log_format_from_env(env),
            retention_s=retention_from_env(env),
            prune_interval_s=_number(env, "POSTSAVE_PRUNE_INTERVAL", cls.prune_interval_s, float),
            recalculation=recalculation_from_env(env),
            part_size=_number(env, "POSTSAVE_PART_SIZE", cls.part_size, int),
            part_time_limit_s=_number(
                env, "POSTSAVE_PART_TIME_LIMIT", cls.part_time_limit_s, float
            ),
        )

    @property
    def relay_limits(self) -> RelayLimits:
        return RelayLimits(
            batch_size=self.batch_size,
            max_in_flight=self.max_in_flight,
            lease_seconds=self.lease_seconds,
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts)

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+sqlite")

    @property
    def uses_amqp(self) -> bool:
        return is_amqp_url(self.broker_url)
