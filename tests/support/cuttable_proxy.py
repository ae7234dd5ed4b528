"""A TCP proxy on loopback whose connections a test can reset or freeze: what a
network blip, a dropped NAT entry or a restarted load balancer does to the calls on
them. A cut gives both sides of each connection a TCP RST (SO_LINGER 0), not a
goodbye; a freeze drops every byte either side sends from then on, with no close at
all (a path gone silent: only keepalive pings find it out). Connections made after
either are forwarded as usual.

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
        self._frozen: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._cut = threading.Event()
        self._freeze = threading.Event()
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuttable-proxy", daemon=True)
        self._thread.start()

    def cut(self, timeout: float = 10) -> None:
        """Reset every connection open now, both ways; returns once done."""
        self._ask(self._cut, timeout)

    def freeze(self, timeout: float = 10) -> None:
        """From now on, drop what either side of every connection open now sends."""
        self._ask(self._freeze, timeout)

    def _ask(self, what: threading.Event, timeout: float) -> None:
        self._done.clear()
        what.set()
        if not self._done.wait(timeout):
            raise TimeoutError("the proxy did not do as asked")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._cut.is_set():
                    self._reset_all()
                    self._cut.clear()
                    self._done.set()
                if self._freeze.is_set():
                    self._frozen |= set(self._peers)
                    self._freeze.clear()
                    self._done.set()
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
                if sock not in self._frozen:
                    peer.sendall(data)
                return
        except OSError:
            pass
        if sock in self._frozen:
            # Nothing gets through a frozen path, its end neither: only this side goes.
            self._close(sock)
            return
        # One side ended (or failed): end the other side the same way, gently.
        self._close(sock)
        self._close(peer)

    def _close(self, s: socket.socket, *, reset: bool = False) -> None:
        self._peers.pop(s, None)
        self._frozen.discard(s)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(s)
        with contextlib.suppress(OSError):
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            s.close()

    def _reset_all(self) -> None:
        for s in list(self._peers):
            self._close(s, reset=True)


@contextlib.contextmanager
def cuttable_proxy(target: str) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
