"""A TCP proxy in front of an S3 server that resets connections and answers 503 at random.

Each accepted connection draws its fate once: pass through, pass through but
reset after a random number of bytes (in either direction: a request or a
response body cut short), or answer its first request with
``503 SlowDown`` and close. The seeded random source makes a run repeatable
in kind (thread timing still varies). Counters say how many faults were
injected, so a test can assert that it really met some.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass, field

__all__ = ["FaultyProxy"]

_SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"


@dataclass
class FaultyProxy:
    upstream: tuple[str, int]
    reset_rate: float = 0.15
    unavailable_rate: float = 0.15
    cut_within: int = 2 << 20
    seed: int = 1
    resets: int = 0
    unavailable: int = 0
    connections: int = 0
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _listener: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                draw = self._rng.random()
                budget = self._rng.randrange(1, self.cut_within)
            if draw < self.unavailable_rate:
                threading.Thread(target=self._unavailable, args=(client,), daemon=True).start()
            else:
                cut = budget if draw < self.unavailable_rate + self.reset_rate else None
                threading.Thread(target=self._relay, args=(client, cut), daemon=True).start()

    def _unavailable(self, client: socket.socket) -> None:
        with self._lock:
            self.unavailable += 1
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(_SLOW_DOWN)}\r\nConnection: close\r\n\r\n"
        )
        with client, contextlib.suppress(OSError):
            client.recv(65536)
            client.sendall(head.encode() + _SLOW_DOWN)

    def _relay(self, client: socket.socket, cut: int | None) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            _reset(client)
            return
        budget = [cut if cut is not None else -1]  # shared by both directions
        done = threading.Event()
        for source, target in ((client, server), (server, client)):
            threading.Thread(
                target=self._pump, args=(source, target, budget, done), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, target: socket.socket, budget: list[int], done: threading.Event
    ) -> None:
        try:
            while not done.is_set():
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    if budget[0] >= 0:
                        budget[0] -= len(data)
                        if budget[0] < 0:
                            self.resets += 1
                            data = data[: len(data) + budget[0]]
                            target.sendall(data)
                            raise ConnectionResetError("injected")
                target.sendall(data)
        except OSError:
            pass
        done.set()
        _reset(source)
        _reset(target)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the peer.

    ``shutdown(SHUT_RD)`` first wakes the other pump, blocked in ``recv`` on it.
    """
    for step in (
        lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
        lambda: sock.shutdown(socket.SHUT_RD),
    ):
        with contextlib.suppress(OSError):
            step()
    sock.close()
