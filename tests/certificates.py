"""Certificates for the tests' own TLS servers, from a certificate authority made at test time
with the `openssl` command line: nothing is trusted outside the test's directory."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.services import unavailable


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    directory: Path
    cert: Path
    key: Path

    def issue(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Issued:
        """A certificate for `hosts` (DNS names and IP addresses), good for a server and a
        client, signed by this authority."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        names = ",".join(
            f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}" for host in hosts
        )
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={names}\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "basicConstraints=CA:FALSE\n"
        )
        _openssl(
            "req", "-new", *_EC_KEY, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}"
        )
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", extensions,
        )  # fmt: skip
        key.chmod(0o600)
        return Issued(cert, key)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def make_authority(directory: Path, name: str = "postsave test CA") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name.replace(' ', '-')}.key", directory / "ca.crt"
    if shutil.which("openssl") is None:
        unavailable("openssl", "no openssl command (apt-get install openssl)")
    _openssl(
        "req", "-x509", *_EC_KEY, "-nodes", "-keyout", key, "-out", cert,
        "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign",
    )  # fmt: skip
    return Authority(directory, cert, key)


def _openssl(*args: object) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
