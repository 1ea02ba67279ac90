"""A storage wrapper that limits the upload rate: a token bucket around ``put``/``create``.

``RateLimitedStorage(inner, rate)`` lets at most ``rate`` bytes per second
through its writes on average, with bursts up to ``burst`` bytes (default: one
second's worth). A write larger than the bucket goes through whole and puts
the bucket in debt: the next write waits until the debt is paid, so the long
run average holds whatever the object sizes (16 MiB packs at 1 MiB/s wait
16 s each). Reads, lists and deletes pass through unlimited. Thread-safe: one
bucket shared by every thread that writes through the wrapper.

The clock and the sleep are injectable so tests run without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from surety.core.errors import UsageError
from surety.core.units import parse_size
from surety.repo.storage.base import Storage
from surety.repo.storage.wrapper import StorageWrapper

__all__ = ["RateLimitedStorage", "parse_rate"]


class RateLimitedStorage(StorageWrapper):
    def __init__(
        self,
        inner: Storage,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner)
        if rate <= 0:
            raise UsageError("an upload limit must be more than 0 bytes per second")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, in total

    def _take(self, amount: int) -> None:
        with self._lock:  # writers queue: each waits for its turn, in order
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 0:  # the debt of the previous write
                wait = -self._tokens / self.rate
                self._sleep(wait)
                self.waited += wait
                self._tokens = 0.0
                self._last = self._clock()
            self._tokens -= amount

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._take(len(data))
        self.inner.put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._take(len(data))
        self.inner.create(name, data)


def parse_rate(text: str) -> int:
    """``"20M"``, ``"20M/s"``, ``"512KiB/s"``, ``"1000000"`` -> bytes per second (binary units)."""
    body = text.strip()
    for suffix in ("/s", "/sec", "ps"):
        if body.lower().endswith(suffix):
            body = body[: -len(suffix)]
            break
    try:
        rate = parse_size(body)
    except UsageError:
        raise UsageError(f"not a rate: {text!r} (use e.g. 20M, 20M/s, 512K)") from None
    if rate <= 0:
        raise UsageError(f"an upload limit must be more than 0: {text!r}")
    return rate
