"""A TCP proxy on loopback whose connections a test can reset: what a network blip,
a dropped NAT entry or a restarted load balancer does to the calls on them. Both
sides of each connection get a TCP RST (SO_LINGER 0), not a goodbye.

One thread does everything (a selector over the listener and every socket), so a
cut happens between two reads, never during one."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Iterator

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class CuttableProxy:
    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = 0
        self._peers: dict[socket.socket, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._cut = threading.Event()
        self._cut_done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuttable-proxy", daemon=True)
        self._thread.start()

    def cut(self, timeout: float = 10) -> None:
        """Reset every connection open now, both ways; returns once done."""
        self._cut_done.clear()
        self._cut.set()
        if not self._cut_done.wait(timeout):
            raise TimeoutError("the proxy did not cut its connections")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._cut.is_set():
                    self._reset_all()
                    self._cut.clear()
                    self._cut_done.set()
                for key, _ in self._selector.select(0.02):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif sock in self._peers:
                        self._forward(sock)
        finally:
            self._reset_all()
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            down, _ = self._listener.accept()
            try:
                up = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                down.close()
                return
            self.accepted += 1
            for s in (down, up):
                s.setblocking(True)
                s.settimeout(10)
                self._selector.register(s, selectors.EVENT_READ)
            self._peers[down], self._peers[up] = up, down

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        # One side ended (or failed): end the other side the same way, gently.
        for s in (sock, peer):
            self._drop(s)
            with contextlib.suppress(OSError):
                s.close()

    def _drop(self, s: socket.socket) -> None:
        self._peers.pop(s, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(s)

    def _reset_all(self) -> None:
        for s in list(self._peers):
            self._drop(s)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                s.close()


@contextlib.contextmanager
def cuttable_proxy(target: str) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
