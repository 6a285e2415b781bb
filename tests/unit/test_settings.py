"""Settings from the environment: what each knob accepts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from infrastructure.broker.celery_app import celery_config
from infrastructure.settings import BrokerTls, Settings, SettingsError


def test_coalescing_can_be_turned_off_with_zero() -> None:
    assert Settings.from_env({"POSTSAVE_COALESCE_LIMIT": "0"}).coalesce_limit == 0
    assert Settings.from_env({}).coalesce_limit == 500


@pytest.mark.parametrize("name", ["POSTSAVE_BATCH_SIZE", "POSTSAVE_MAX_IN_FLIGHT"])
def test_zero_is_refused_where_it_means_nothing(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='0' must be a finite number greater than 0$"):
        Settings.from_env({name: "0"})


def test_a_negative_coalesce_limit_says_what_zero_would_mean() -> None:
    with pytest.raises(SettingsError, match="or 0 for one pass per event"):
        Settings.from_env({"POSTSAVE_COALESCE_LIMIT": "-5"})


def test_the_defaults_are_the_embedded_database_and_broker() -> None:
    settings = Settings.from_env({})
    assert (settings.database_url, settings.broker_url) == (
        "sqlite:///var/postsave.db",
        "sqla+sqlite:///var/broker.db",
    )


@pytest.mark.parametrize(
    ("name", "url", "problem"),
    [
        ("POSTSAVE_DATABASE_URL", "mysql://u:s3cret@h/db", "does not support ('mysql')"),
        ("POSTSAVE_DATABASE_URL", "postgresql+psycopg://u:s3cret@h:abc/db", "port"),
        ("POSTSAVE_BROKER_URL", "redis://u:s3cret@h/0", "does not support ('redis')"),
        ("POSTSAVE_BROKER_URL", "amqp//u:s3cret@h//", "is not a broker URL"),
    ],
)
def test_a_url_postsave_cannot_use_is_refused_without_its_password(
    name: str, url: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: url})
    message = str(refused.value)
    assert message.startswith(f"{name}='")
    assert problem in message
    assert "s3cret" not in message
    assert ":***@" in message


def test_the_broker_and_statement_timeouts_are_read_and_must_be_positive() -> None:
    settings = Settings.from_env(
        {"POSTSAVE_BROKER_TIMEOUT": "2.5", "POSTSAVE_STATEMENT_TIMEOUT": "40"}
    )
    assert (settings.broker_timeout_s, settings.statement_timeout_s) == (2.5, 40.0)
    assert (Settings().broker_timeout_s, Settings().statement_timeout_s) == (10.0, 15.0)
    for name in ("POSTSAVE_BROKER_TIMEOUT", "POSTSAVE_STATEMENT_TIMEOUT"):
        with pytest.raises(SettingsError, match=f"{name}='0' must be a finite number"):
            Settings.from_env({name: "0"})


def test_the_log_format_is_text_by_default_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"POSTSAVE_LOG_FORMAT": ""}).log_format == "text"
    assert Settings.from_env({"POSTSAVE_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({"POSTSAVE_LOG_FORMAT": " JSON "}).log_format == "json"


@pytest.mark.parametrize("value", ["xml", "logfmt", "1"])
def test_another_log_format_is_refused_in_one_line_naming_the_allowed_ones(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"POSTSAVE_LOG_FORMAT": value})
    assert str(refused.value) == (
        f"POSTSAVE_LOG_FORMAT={value!r} is not a log format (use text or json)"
    )


def test_retention_is_a_duration_and_unset_keeps_every_event() -> None:
    assert Settings.from_env({}).retention_s is None
    assert Settings.from_env({"POSTSAVE_RETENTION": " "}).retention_s is None
    assert Settings.from_env({"POSTSAVE_RETENTION": "7d"}).retention_s == 604_800
    assert Settings.from_env({"POSTSAVE_RETENTION": "0s"}).retention_s == 0
    assert Settings.from_env({}).prune_interval_s == 3_600
    assert Settings.from_env({"POSTSAVE_PRUNE_INTERVAL": "60"}).prune_interval_s == 60


@pytest.mark.parametrize("value", ["7", "7 days", "1w", "-1d"])
def test_a_retention_that_is_not_a_duration_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"POSTSAVE_RETENTION": value})
    assert str(refused.value) == (
        f"POSTSAVE_RETENTION={value!r} is not a duration: a whole number and s, m, h or d (7d); "
        "unset it to keep every event"
    )


AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_queues_are_classic_by_default_or_quorum_on_rabbitmq() -> None:
    assert Settings.from_env({"POSTSAVE_BROKER_URL": AMQP}).queue_type == "classic"
    quorum = {"POSTSAVE_BROKER_URL": AMQP, "POSTSAVE_QUEUE_TYPE": " Quorum "}
    assert Settings.from_env(quorum).queue_type == "quorum"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"POSTSAVE_BROKER_URL": AMQP, "POSTSAVE_QUEUE_TYPE": "mirrored"},
            "POSTSAVE_QUEUE_TYPE='mirrored' is not a queue type (use classic or quorum)",
        ),
        (
            {"POSTSAVE_QUEUE_TYPE": "quorum"},
            "POSTSAVE_QUEUE_TYPE=quorum needs RabbitMQ: set POSTSAVE_BROKER_URL to amqp:// "
            "URLs, or unset POSTSAVE_QUEUE_TYPE",
        ),
    ],
)
def test_a_queue_type_postsave_cannot_declare_is_refused_in_one_line(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == message


def test_a_database_url_with_several_hosts_in_libpqs_form_is_kept_in_sqlalchemys() -> None:
    url = "postgresql+psycopg://postsave@pg1:5440,pg2:5441/postsave?target_session_attrs=read-write"
    assert Settings.from_env({"POSTSAVE_DATABASE_URL": url}).database_url == (
        "postgresql+psycopg://postsave@/postsave"
        "?host=pg1:5440&host=pg2:5441&target_session_attrs=read-write"
    )


URL_NAMES = ["POSTSAVE_DATABASE_URL", "POSTSAVE_BROKER_URL"]
URLS = {
    "POSTSAVE_DATABASE_URL": "postgresql+psycopg://app:s3cret@db.internal:5432/postsave",
    "POSTSAVE_BROKER_URL": "amqp://app:s3cret@mq.internal:5672/postsave",
}


def read_url(settings: Settings, name: str) -> str:
    return settings.database_url if name == "POSTSAVE_DATABASE_URL" else settings.broker_url


@pytest.mark.parametrize("name", URL_NAMES)
def test_a_url_is_read_from_the_file_its_file_variable_names(name: str, tmp_path: Path) -> None:
    """As systemd's LoadCredential= and container secrets hand them over: a file, with the
    newline an editor or `echo` leaves."""
    held = tmp_path / "url"
    held.write_text(URLS[name] + "\n")

    settings = Settings.from_env({f"{name}_FILE": str(held)})

    assert read_url(settings, name) == URLS[name]


@pytest.mark.parametrize("name", URL_NAMES)
def test_a_url_and_its_file_together_are_refused(name: str, tmp_path: Path) -> None:
    held = tmp_path / "url"
    held.write_text(URLS[name])
    with pytest.raises(SettingsError, match=f"^{name} and {name}_FILE are both set: set one"):
        Settings.from_env({name: URLS[name], f"{name}_FILE": str(held)})


@pytest.mark.parametrize("name", URL_NAMES)
def test_a_file_that_cannot_be_read_or_is_empty_is_said_in_one_line(
    name: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({f"{name}_FILE": str(missing)})
    assert str(raised.value) == (
        f"{name}_FILE='{missing}' cannot be read (No such file or directory); check the path "
        "and that this user may read it"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match=f"^{name}_FILE='{empty}' is empty; it must hold"):
        Settings.from_env({f"{name}_FILE": str(empty)})
    with pytest.raises(SettingsError, match=r"cannot be read \(Is a directory\)"):
        Settings.from_env({f"{name}_FILE": str(tmp_path)})


@pytest.mark.parametrize("name", URL_NAMES)
def test_a_url_from_a_file_that_postsave_cannot_use_is_refused_without_its_password(
    name: str, tmp_path: Path
) -> None:
    held = tmp_path / "url"
    held.write_text(URLS[name].replace("://", "//"))
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({f"{name}_FILE": str(held)})
    assert "s3cret" not in str(raised.value)
    assert "***" in str(raised.value)


def test_amqps_verifies_the_broker_with_the_ca_and_a_client_certificate(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("-")
    env = {
        "POSTSAVE_BROKER_URL": "amqps://u:pw@mq.internal:5671/postsave",
        "POSTSAVE_BROKER_CA_FILE": str(tmp_path / "ca.crt"),
        "POSTSAVE_BROKER_CERT_FILE": str(tmp_path / "client.crt"),
        "POSTSAVE_BROKER_KEY_FILE": str(tmp_path / "client.key"),
    }
    settings = Settings.from_env(env)

    assert settings.broker_tls == BrokerTls(
        str(tmp_path / "ca.crt"), str(tmp_path / "client.crt"), str(tmp_path / "client.key")
    )
    assert celery_config(settings)["broker_use_ssl"] == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,  # kombu puts the URL's host here: the name is checked
        "ca_certs": str(tmp_path / "ca.crt"),
        "certfile": str(tmp_path / "client.crt"),
        "keyfile": str(tmp_path / "client.key"),
    }
    plain = Settings.from_env({"POSTSAVE_BROKER_URL": "amqps://u:pw@mq.internal:5671/postsave"})
    assert celery_config(plain)["broker_use_ssl"] == {  # the system's CAs, still verified
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
    }
    assert celery_config(Settings.from_env({}))["broker_use_ssl"] is None


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"POSTSAVE_BROKER_URL": "amqp://u@mq//", "POSTSAVE_BROKER_CA_FILE": "/x"},
            "POSTSAVE_BROKER_CA_FILE is set, but POSTSAVE_BROKER_URL is not amqps:// (every URL "
            "of a list): use amqps://, postsave never falls back to plain text",
        ),
        (
            {
                "POSTSAVE_BROKER_URL": "amqps://u@a//;amqp://u@b//",
                "POSTSAVE_BROKER_CERT_FILE": "/x",
            },
            "POSTSAVE_BROKER_CERT_FILE is set, but POSTSAVE_BROKER_URL is not amqps://",
        ),
        (
            {"POSTSAVE_BROKER_URL": "amqps://u@mq//", "POSTSAVE_BROKER_CERT_FILE": "/x"},
            "POSTSAVE_BROKER_CERT_FILE and POSTSAVE_BROKER_KEY_FILE go together",
        ),
        (
            {"POSTSAVE_BROKER_URL": "amqps://u@mq//", "POSTSAVE_BROKER_CA_FILE": "/no/ca.crt"},
            "POSTSAVE_BROKER_CA_FILE='/no/ca.crt' is not a file this process can see",
        ),
    ],
)
def test_broker_tls_settings_that_cannot_hold_are_refused_in_one_line(
    env: dict[str, str], said: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(said)
