"""The Prometheus exporters' web configuration file (`--web-config FILE`), as the official
exporters read it (prometheus/exporter-toolkit): TLS for the endpoint, and HTTP basic auth
with bcrypt hashes.

    tls_server_config:
      cert_file: metrics.crt        # relative paths are the file's directory's
      key_file: metrics.key
      client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
      client_ca_file: clients-ca.crt
      min_version: TLS12            # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...        # htpasswd -nBC 10 "" | tr -d ':\\n', or python's bcrypt

Anything this does not know is refused at start, in one line: a key that is silently ignored
would leave an operator believing the endpoint protected."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

TOP_KEYS = {"tls_server_config", "basic_auth_users"}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class WebConfigError(ValueError):
    """The web configuration file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # name: bcrypt hash

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def load_web_config(path: str) -> WebConfig:
    where = Path(path)
    try:
        raw = yaml.safe_load(where.read_text(encoding="utf-8"))
    except OSError as error:
        raise WebConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else "not YAML"
        raise WebConfigError(f"{path}: not a YAML file ({first})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: expected a mapping of {', '.join(sorted(TOP_KEYS))}")
    _no_unknown(path, "", raw, TOP_KEYS)
    tls = raw.get("tls_server_config")
    users = raw.get("basic_auth_users")
    return WebConfig(
        tls=None if tls is None else _tls_context(path, where.parent, tls),
        users={} if users is None else _users(path, users),
    )


def _no_unknown(path: str, within: str, found: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(str(key) for key in found if key not in known)
    if unknown:
        raise WebConfigError(
            f"{path}: {within}{unknown[0]} is not supported (postsave reads "
            f"{', '.join(sorted(known))})"
        )


def _tls_context(path: str, directory: Path, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise WebConfigError(f"{path}: tls_server_config must be a mapping")
    _no_unknown(path, "tls_server_config.", tls, TLS_KEYS)
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise WebConfigError(f"{path}: tls_server_config needs cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = tls.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise WebConfigError(
            f"{path}: tls_server_config.min_version {version!r} is not one of TLS12, TLS13"
        )
    context.minimum_version = TLS_VERSIONS[version]
    cert, key = (_file(directory, tls[name]) for name in ("cert_file", "key_file"))
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise WebConfigError(
            f"{path}: cannot load cert_file {cert} with key_file {key} ({_reason(error)})"
        ) from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type {auth!r} is not one of "
            f"{', '.join(CLIENT_AUTH)}"
        )
    context.verify_mode = CLIENT_AUTH[auth]
    if CLIENT_AUTH[auth] != ssl.CERT_NONE:
        if not tls.get("client_ca_file"):
            raise WebConfigError(f"{path}: client_auth_type {auth} needs client_ca_file")
        ca = _file(directory, tls["client_ca_file"])
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as error:
            raise WebConfigError(
                f"{path}: cannot load client_ca_file {ca} ({_reason(error)})"
            ) from None
    return context


def _file(directory: Path, name: Any) -> str:
    given = Path(str(name))
    return str(given if given.is_absolute() else directory / given)


def _reason(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or getattr(error, "reason", None) or error)


def _users(path: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise WebConfigError(f"{path}: basic_auth_users must map user names to bcrypt hashes")
    hashes = {}
    for name, hashed in users.items():
        encoded = str(hashed).encode()
        try:
            bcrypt.checkpw(b"", encoded)  # a malformed hash raises; its cost is paid once
        except ValueError:
            raise WebConfigError(
                f"{path}: basic_auth_users.{name} is not a bcrypt hash ($2y$..., $2b$...)"
            ) from None
        hashes[str(name)] = encoded
    return hashes


class BasicAuth:
    """WSGI middleware: the wrapped app answers only requests with a user's password. bcrypt
    is slow on purpose (tens of milliseconds a check): a password once verified is kept by
    its SHA-256, so a scrape every few seconds costs one hash, not one bcrypt."""

    def __init__(self, app: Callable[..., Iterable[bytes]], users: Mapping[str, bytes]) -> None:
        self.app, self.users = app, users
        self._verified: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="postsave"'), ("Content-Type", "text/plain")],
        )
        return [b"Unauthorized\n"]

    def _allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        seen = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if seen in self._verified:
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(seen)
        return True
