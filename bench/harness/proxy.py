"""A broker outage seen by one client: a TCP proxy in front of RabbitMQ that this process can
take down and bring back. Only the connections routed through it are cut (the publisher's),
so nothing else on the broker notices, and the broker itself is never restarted."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

BUFFER = 65536


@dataclass
class BrokerProxy:
    target: tuple[str, int] = ("127.0.0.1", 5672)
    _listener: socket.socket = field(init=False)
    _up: threading.Event = field(default_factory=threading.Event)
    _closed: threading.Event = field(default_factory=threading.Event)
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._up.set()
        threading.Thread(target=self._accept, name="broker-proxy", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, amqp_url: str) -> str:
        """The same vhost and credentials, through the proxy."""
        scheme, rest = amqp_url.split("://", 1)
        credentials, location = rest.rsplit("@", 1)
        vhost = location.split("/", 1)[1] if "/" in location else ""
        return f"{scheme}://{credentials}@127.0.0.1:{self.port}/{vhost}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()  # the broker is "unreachable": connection refused, at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def down(self) -> None:
        """Cut every proxied connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            current = list(self._sockets)
        for sock in current:
            self._drop(sock)

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed.set()
        self.down()
        self._listener.close()
