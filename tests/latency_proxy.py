"""A TCP proxy on 127.0.0.1 that delays every request, or cuts the connection (tests, benchmarks).

Put in front of the local S3 server, it gives object storage the latency of a cloud bucket
(``latency_s`` before each request's bytes are forwarded) or a sudden outage (:meth:`cut`:
open connections are closed and new ones are refused).  Only loopback addresses are used.
"""

from __future__ import annotations

import socket
import threading
import time


class LatencyProxy:
    def __init__(self, upstream_port: int, latency_s: float = 0.0, cut_after_requests: int | None = None):
        self.upstream = ("127.0.0.1", upstream_port)
        self.latency_s = latency_s
        self.cut_after_requests = cut_after_requests
        self.requests = 0
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="latency-proxy").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """From now on every connection fails: open ones are closed, new ones refused."""
        self._cut.set()
        with self._lock:
            for s in list(self._sockets):
                _close(s)

    def close(self) -> None:
        self.cut()
        _close(self._server)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while not self._cut.is_set():
                data = src.recv(1 << 16)
                if not data:
                    break
                if requests:  # a client's burst of bytes: a request (a large PUT body is several)
                    with self._lock:
                        self.requests += 1
                        if self.cut_after_requests is not None and self.requests > self.cut_after_requests:
                            self._cut.set()
                    if self._cut.is_set():
                        break
                    if self.latency_s:
                        time.sleep(self.latency_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self._cut.is_set():
                self.cut()
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._sockets.difference_update((src, dst))


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
