"""A three-node RabbitMQ cluster of the tests' own on this machine, for the faults of a
replicated broker: a node that dies while it leads postsave's quorum queue. Each node has its
own name, AMQP and distribution ports and data directories (rabbitmq_node.py); they share one
Erlang cookie, which clustering needs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.rabbitmq_node import RabbitMQNode
from tests.services import unavailable

# The tests on the cluster run one after the other on one pytest worker, which starts it once.
OWN_CLUSTER = pytest.mark.xdist_group("own-rabbitmq-cluster")

T = TypeVar("T")
# A quorum queue publishes its depths (what list_queues shows) at each tick of its leader,
# every 5 s by default: too stale for a reading a second. This changes only the statistics.
QUORUM_STATISTICS_EVERY_250_MS = "[{rabbit, [{quorum_tick_interval, 250}]}].\n"


class RabbitMQCluster:
    """Nodes booted side by side, then joined to the first (`stop_app`, `join_cluster`,
    `start_app`). `stop` tears every node down, whatever state each is in."""

    def __init__(self, base: Path, size: int = 3) -> None:
        cookie = uuid.uuid4().hex
        bases = [base / f"node-{index}" for index in range(size)]
        for each in bases:
            each.mkdir(parents=True)
        self.nodes = [
            RabbitMQNode(each, cookie=cookie, advanced_config=QUORUM_STATISTICS_EVERY_250_MS)
            for each in bases
        ]

    def broker_url(self, vhost: str = "/") -> str:
        """Every node's URL, `;`-separated, as POSTSAVE_BROKER_URL takes a broker list."""
        return ";".join(node.url(vhost) for node in self.nodes)

    def add_vhost(self) -> str:
        """A vhost of the calling test's own, open to guest: its queues start from nothing."""
        vhost = f"postsave-test-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return vhost

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.launch()
            self._each(lambda node: node.wait_until_up(), self.nodes)
            seed, *joining = self.nodes
            self._each(lambda node: node.ctl("stop_app"), joining)
            for node in joining:  # one at a time: each join changes the cluster's membership
                node.ctl("join_cluster", seed.name)
            self._each(lambda node: node.ctl("start_app"), joining)
            self._each(lambda node: node.ctl("await_startup"), joining)
            running = self.running_nodes()
            assert running == {node.name for node in self.nodes}, running
        except BaseException as error:
            self.stop()  # never leave a node behind, half a cluster included
            if isinstance(error, (AssertionError, subprocess.SubprocessError)):
                stderr = getattr(error, "stderr", "") or ""
                unavailable("a RabbitMQ cluster of the tests' own", f"{error} {stderr}"[-2000:])
            raise

    def stop(self) -> None:
        self._each(lambda node: node.stop(), self.nodes)

    @staticmethod
    def _each(act: Callable[[RabbitMQNode], T], nodes: list[RabbitMQNode]) -> list[T]:
        """`act` on every node side by side: each rabbitmqctl boots an Erlang VM of its own."""
        with ThreadPoolExecutor(max_workers=max(len(nodes), 1)) as pool:
            return list(pool.map(act, nodes))

    def live(self) -> list[RabbitMQNode]:
        return [node for node in self.nodes if not node.killed]

    def ctl(self, *args: str) -> str:
        """`rabbitmqctl` on the first node still alive."""
        return self.live()[0].ctl(*args)

    def running_nodes(self) -> set[str]:
        status = json.loads(self.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def node_named(self, name: str) -> RabbitMQNode:
        [node] = [node for node in self.nodes if node.name == name]
        return node

    def leader_of(self, queue: str, vhost: str = "/") -> RabbitMQNode:
        """The node that holds the leader of the quorum queue `queue`."""
        row = self.queues(vhost)[queue]
        assert row["type"] == "quorum", row
        return self.node_named(str(row["leader"]))

    def members_of(self, queue: str, vhost: str = "/") -> list[str]:
        """The nodes that hold a replica of the quorum queue `queue`."""
        members = self.queues(vhost)[queue]["members"]
        assert isinstance(members, list), members
        return sorted(str(member) for member in members)

    def queues(self, vhost: str = "/") -> dict[str, dict[str, object]]:
        """Every queue of `vhost` with its type, leader and members (quorum queues), and depths."""
        listed = self.ctl(
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "leader",
            "members",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
        )
        return {row["name"]: row for row in json.loads(listed or "[]")}

    def delete_queues(self, names: list[str], vhost: str = "/") -> None:
        for name in names:
            self.ctl("delete_queue", "-p", vhost, name)

    def kill_leader_of(self, queue: str) -> RabbitMQNode:
        """SIGKILL the node that leads `queue`: no goodbye to its peers or its clients."""
        leader = self.leader_of(queue)
        leader.kill()
        return leader


class ClusterDepths:
    """Ready plus unacknowledged messages per queue, read on a node still alive, for
    tests.rabbitmq.DepthSampler. A reading the cluster does not answer (the node read was
    killed meanwhile) counts as failed, with what it said, not as an empty queue."""

    def __init__(self, cluster: RabbitMQCluster, vhost: str = "/") -> None:
        self.cluster = cluster
        self.vhost = vhost
        self.failures: list[str] = []

    @property
    def failed(self) -> int:
        return len(self.failures)

    def broker_depths(self) -> dict[str, int]:
        try:
            queues = self.cluster.queues(self.vhost)
        except subprocess.CalledProcessError as error:
            self.failures.append((error.stderr or error.stdout or str(error)).strip()[-300:])
            return {}
        except (subprocess.SubprocessError, OSError, ValueError) as error:
            self.failures.append(str(error)[-300:])
            return {}
        return {
            name: int(str(row["messages_ready"])) + int(str(row["messages_unacknowledged"]))
            for name, row in queues.items()
        }


@contextlib.contextmanager
def running_cluster(base: Path) -> Iterator[RabbitMQCluster]:
    cluster = RabbitMQCluster(base)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
