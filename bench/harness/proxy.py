"""A broker outage seen by one client: a TCP proxy in front of RabbitMQ that this process can
take down and bring back. Only the connections routed through it are cut (the publishers'),
so nothing else on the broker notices, and the broker itself is never restarted."""

from __future__ import annotations

import contextlib
import socket
import threading


class BrokerProxy:
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._up, self._closed = threading.Event(), threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._up.set()
        threading.Thread(target=self._accept, name="broker-proxy", daemon=True).start()

    def url(self, amqp_url: str) -> str:
        """The same vhost and credentials, through the proxy."""
        scheme, rest = amqp_url.split("://", 1)
        credentials, location = rest.rsplit("@", 1)
        vhost = location.split("/", 1)[1] if "/" in location else ""
        return f"{scheme}://{credentials}@127.0.0.1:{self._listener.getsockname()[1]}/{vhost}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                if not self._up.is_set():
                    raise ConnectionRefusedError  # the broker is "unreachable", at once
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
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
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
        self._drop(*current)

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed.set()
        self.down()
        self._listener.close()
