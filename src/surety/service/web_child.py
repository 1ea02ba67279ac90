"""The web console beside the service: ``surety web`` as a child process, kept alive.

Why a child process and not a thread: the console is an adapter (FastAPI, uvicorn,
Jinja2) the service must not import (the layer contracts hold that), uvicorn wants
the main thread for its signal handlers, and - the point of the ``[web]`` table - a
crash of the web part (an exception, a stuck event loop, memory) must not stop the
scheduler. A process gives all three; its cost is one more Python interpreter.

``WebChild`` starts ``python -m surety web --config FILE --listen HOST:PORT [--tls-*]``,
and a supervising thread restarts it when it ends on its own, waiting ``backoff``
seconds (doubling up to ``MAX_BACKOFF``) so a port in use does not spin. ``stop()``
sends SIGTERM (``surety web`` waits up to 10 s for open connections), then SIGKILL
after ``STOP_GRACE``. The child exits with its parent (``SURETY_WEB_PARENT``): a
killed service leaves no console holding the port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from surety.config.model import WebConsole

__all__ = ["PARENT_ENV", "WebChild", "web_command"]

PARENT_ENV = "SURETY_WEB_PARENT"  # the child's parent pid: it exits when that one dies
STOP_GRACE = 15.0
MAX_BACKOFF = 60.0

log = logging.getLogger("surety.service.web")


def web_command(config_path: Path, web: WebConsole) -> list[str]:
    """The ``surety web`` command line of ``[web]``."""
    host = f"[{web.host}]" if ":" in web.host else web.host
    command = [sys.executable, "-m", "surety", "web", "--config", str(config_path)]
    command += ["--listen", f"{host}:{web.port}", "--idle-mounts", str(web.idle_mounts)]
    if web.tls_cert is not None and web.tls_key is not None:
        command += ["--tls-cert", str(web.tls_cert), "--tls-key", str(web.tls_key)]
    return command


class WebChild:
    """``surety web`` in a child process, restarted when it dies, stopped with the service."""

    def __init__(self, command: list[str], backoff: float = 1.0) -> None:
        self.command = command
        self.backoff = backoff
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="surety-web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        delay = self.backoff
        while not self._stop.is_set():
            try:
                self.process = subprocess.Popen(
                    self.command, env={**os.environ, PARENT_ENV: str(os.getpid())}
                )
            except OSError as exc:
                log.error("web console not started: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self.starts += 1
            if self._stop.is_set():  # stop() came while it started
                self.process.terminate()
            log.info("web console started (pid %d): %s", self.process.pid, " ".join(self.command))
            code = self.process.wait()
            if self._stop.is_set():
                return
            log.error(
                "web console ended (exit %d); the scheduler goes on; restarting in %.0fs",
                code,
                delay,
            )
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the console, SIGKILL it after ``grace``; no restart after this."""
        self._stop.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("web console did not stop within %.0fs: killed", grace)
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join(grace)
        log.info("web console stopped")
