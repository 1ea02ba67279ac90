"""The ``[web]`` table: the web console that ``surety service`` starts beside its loop.

``listen = "HOST:PORT"`` (default ``127.0.0.1:8470``), ``enabled`` (default true once the
table is written), ``tls_cert``/``tls_key`` (PEM files, both or neither, relative to the
configuration file's folder), ``idle_mounts`` (seconds before an unused file-browser
mount closes).
"""

from __future__ import annotations

from surety.config.model import WebConsole
from surety.config.reader import Reader, Table

__all__ = ["WEB_KEYS", "parse_listen", "read_web"]

WEB_KEYS = ("enabled", "listen", "tls_cert", "tls_key", "idle_mounts")


def parse_listen(value: str) -> tuple[str, int] | None:
    """``"HOST:PORT"`` -> (host, port); None when it is not that."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def read_web(r: Reader, table: Table | None) -> WebConsole:
    """The console's settings; a missing table leaves it off."""
    if table is None:
        return WebConsole()
    path = ("web",)
    r.known(table, path, WEB_KEYS)
    defaults = WebConsole()
    host, port = defaults.host, defaults.port
    listen = r.text(table, path, "listen")
    if listen is not None:
        parsed = parse_listen(listen)
        if parsed is None:
            r.problem((*path, "listen"), f"{listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8470")
        else:
            host, port = parsed
    cert, key = r.file(table, path, "tls_cert"), r.file(table, path, "tls_key")
    if (cert is None) != (key is None):
        r.problem(path, "give both tls_cert and tls_key, or neither")
    enabled = r.flag(table, path, "enabled")
    idle = r.number(table, path, "idle_mounts", 1, 86400)
    return WebConsole(
        enabled=True if enabled is None else enabled,
        host=host,
        port=port,
        tls_cert=cert,
        tls_key=key,
        idle_mounts=idle if idle is not None else defaults.idle_mounts,
    )
