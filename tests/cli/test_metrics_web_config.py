"""`postsave metrics --web-config FILE`: the exporters' web configuration file. The exporter
serves TLS with a certificate from a CA made here and asks for a bcrypt-hashed password; a
file it cannot honour stops it with one line. (tests/e2e/test_prometheus.py has a real
Prometheus scrape it.)"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.certificates import Authority, make_authority
from tests.cli.conftest import run_in_process
from tests.cli.test_check_and_metrics import free_port
from tests.cli.test_cli import assert_one_line_error

POSTSAVE = str(Path(sys.executable).parent / "postsave")
PASSWORD = "s3cret-scrape"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"))


def web_config(directory: Path, authority: Authority, **extra: str) -> Path:
    """TLS with the CA's certificate for 127.0.0.1, and one user, relative paths included."""
    issued = authority.issue("metrics")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = directory / "web.yml"
    lines = [
        "tls_server_config:",
        f"  cert_file: {issued.cert}",
        f"  key_file: {os.path.relpath(issued.key, directory)}",
        *(f"  {key}: {value}" for key, value in extra.items()),
        "basic_auth_users:",
        f"  prometheus: '{hashed}'",
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path, authority: Authority) -> Iterator[int]:
    port = free_port()
    config = web_config(tmp_path, authority)
    env = {**os.environ, "POSTSAVE_DATABASE_URL": sqlite_url}
    command = [POSTSAVE, "metrics", "--port", str(port), "--web-config", str(config)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            ready = process.stdout.readline()
            assert ready == (
                f"serving Prometheus metrics on https://127.0.0.1:{port}/metrics (basic auth)\n"
            )
            yield port
        finally:
            process.terminate()


def fetch(url: str, authority: Authority | None, user: str | None = None) -> int:
    context = ssl.create_default_context(cafile=str(authority.cert)) if authority else None
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(user.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            body = response.read().decode()
            assert "postsave_database_up 1.0" in body
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_endpoint_answers_over_tls_with_the_password_only(
    served: int, authority: Authority, tmp_path: Path
) -> None:
    url = f"https://127.0.0.1:{served}/metrics"
    assert fetch(url, authority, f"prometheus:{PASSWORD}") == 200
    assert fetch(url, authority, f"prometheus:{PASSWORD}") == 200  # verified once, then kept
    assert fetch(url, authority, "prometheus:wrong") == 401
    assert fetch(url, authority, f"someone:{PASSWORD}") == 401
    assert fetch(url, authority) == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: no answer
        fetch(f"http://127.0.0.1:{served}/metrics", None, f"prometheus:{PASSWORD}")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(url, make_authority(tmp_path / "another"), f"prometheus:{PASSWORD}")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config needs cert_file and"),
        ("basic_auth_users: {p: not-a-hash}\n", "basic_auth_users.p is not a bcrypt hash"),
        ("http_server_config: {http2: false}\n", "http_server_config is not supported"),
        (
            "tls_server_config: {cert_file: a.crt, key_file: a.key, cipher_suites: []}\n",
            "tls_server_config.cipher_suites is not supported",
        ),
        ("tls_server_config: {cert_file: no.crt, key_file: no.key}\n", "cannot load cert_file"),
        ("[1, 2\n", "not a YAML file"),
    ],
)
def test_a_web_config_it_cannot_honour_stops_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sqlite_url: str,
    tmp_path: Path,
    content: str,
    said: str,
) -> None:
    config = tmp_path / "web.yml"
    config.write_text(content)

    result = run_in_process(
        monkeypatch,
        capsys,
        sqlite_url,
        ["metrics", "--port", str(free_port()), "--web-config", str(config)],
    )

    assert_one_line_error(result, code=1)
    assert f"--web-config {config}: " in result.err
    assert said in result.err


def test_a_missing_web_config_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    result = run_in_process(
        monkeypatch,
        capsys,
        sqlite_url,
        ["metrics", "--port", str(free_port()), "--web-config", "/nowhere/web.yml"],
    )
    assert_one_line_error(result, code=1)
    assert "--web-config /nowhere/web.yml: cannot be read (No such file or directory)" in (
        result.err
    )


def test_a_client_that_connects_and_says_nothing_holds_up_no_scrape(
    served: int, authority: Authority
) -> None:
    """The TLS handshake happens in each request's thread, not in the one that accepts."""
    with socket.create_connection(("127.0.0.1", served)):  # silent: no handshake, no request
        assert (
            fetch(f"https://127.0.0.1:{served}/metrics", authority, f"prometheus:{PASSWORD}") == 200
        )
