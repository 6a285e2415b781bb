"""A RabbitMQ node of the tests' own, for faults that act on a whole node (`stop_app`, a memory
alarm): they stop or block this node only, never the one every other test is using."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.services import unavailable

# For the tests on the `own_rabbitmq` node: under `pytest -n 2 --dist loadgroup` they run one
# after the other on the same pytest worker, which then starts that node once.
OWN_NODE = pytest.mark.xdist_group("own-rabbitmq-node")

# Debian's /usr/sbin scripts switch to the rabbitmq user; the scripts they call run as anyone.
SCRIPT_DIRS = [Path("/usr/lib/rabbitmq/bin")]
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def scripts_dir() -> Path | None:
    for directory in SCRIPT_DIRS:
        if (directory / "rabbitmq-server").exists():
            return directory
    found = shutil.which("rabbitmq-server")
    return Path(found).parent if found else None


class RabbitMQNode:
    """`rabbitmq-server -detached` with its own name, ports, cookie and data directories under
    `base`; `stop` shuts it down. Its AMQP URL is the default vhost, guest/guest on loopback.
    Nodes that share a `cookie` can form a cluster (rabbitmq_cluster.py)."""

    def __init__(
        self,
        base: Path,
        cookie: str | None = None,
        advanced_config: str | None = None,
        config: str = "",
    ) -> None:
        self.base = base
        self.killed = False
        self.name = f"postsave-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._scripts = scripts_dir()
        if self._scripts is None:
            unavailable("rabbitmq-server", "no rabbitmq-server to start a node of the tests' own")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n{config}"  # `config`: more lines
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not the system's node name and ports
        cookie_file = base / ".erlang.cookie"
        cookie_file.write_text(cookie or uuid.uuid4().hex)
        cookie_file.chmod(0o400)  # Erlang refuses a cookie others can read
        self.env = {
            **os.environ,
            "HOME": str(base),  # the cookie: this node's, for it and its rabbitmqctl
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        if advanced_config is not None:  # Erlang terms, for settings rabbitmq.conf lacks
            (base / "advanced.config").write_text(advanced_config)
            self.env["RABBITMQ_ADVANCED_CONFIG_FILE"] = str(base / "advanced.config")

    def url(self, vhost: str = "/") -> str:
        """This node's AMQP URL for `vhost`."""
        return self.amqp_url if vhost == "/" else self.amqp_url[:-1] + quote(vhost, safe="")

    def start(self) -> None:
        self.launch()
        self.wait_until_up()

    def launch(self) -> None:
        """Start the node and return while it boots: nodes of a cluster boot side by side."""
        assert self._scripts is not None
        started = subprocess.run(
            [str(self._scripts / "rabbitmq-server"), "-detached"],
            env=self.env,
            cwd=self.base,  # what Erlang writes to its working directory lands here
            capture_output=True,
            text=True,
            timeout=60,
        )
        if started.returncode != 0:
            unavailable("a RabbitMQ node of the tests' own", started.stderr.strip()[-500:])

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while not self._accepts_connections():
                assert time.monotonic() < deadline, f"not up: {self.logs()}"
                time.sleep(0.2)
            self.ctl("await_startup")
        except (AssertionError, subprocess.SubprocessError) as error:
            self.stop()  # never leave a half-started node behind
            unavailable("a RabbitMQ node of the tests' own", str(error)[-2000:])

    def _accepts_connections(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def ctl(self, *args: str) -> str:
        """`rabbitmqctl -n <this node> ...`: its output; raises if it fails."""
        assert self._scripts is not None
        done = subprocess.run(
            [str(self._scripts / "rabbitmqctl"), "-n", self.name, "-q", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        if self.killed:
            return
        try:
            self.ctl("shutdown")
        except (subprocess.SubprocessError, OSError):
            self.kill()  # never leave a node running behind the tests

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, as a crash of its host would end it."""
        pid_file = self.base / "rabbitmq.pid"
        with contextlib.suppress(OSError, ValueError):  # never started, or gone already
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self.killed = True
        deadline = time.monotonic() + 10
        while self._accepts_connections() and time.monotonic() < deadline:
            time.sleep(0.05)  # the kernel closes its sockets as the VM ends

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.base / "log").glob("*.log"))
        )
