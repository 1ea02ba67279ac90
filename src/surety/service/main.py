"""``surety service``: wire a ``Service`` from the configuration and run it.

The order matters: the configuration is validated first (an invalid one starts
nothing: ``ConfigError``, exit 2), then the host-wide lock is taken (a second
service: ``ServiceRunning``, exit 7) before anything is written, then the
catalog, the host (libvirt, connected at first use), the notifier and the
process runner (closed at the end: its spare worker is killed); then the web
console when ``[web]`` asks for it (a child process, ``web_child``; not with
``--once``), stopped after the loop. Logging goes to stderr, one line per event
with a timestamp (and to ``log_file`` too when given).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from surety.app.catalog import open_catalog
from surety.app.hypervisor import connect_host
from surety.app.status import gather_status
from surety.config import load_config
from surety.config.model import Config
from surety.notify import Notifier
from surety.service.daemon import Service, ServiceNotifier, utc_now
from surety.service.lock import ServiceLock, lock_path_for
from surety.service.runner import ProcessRunner
from surety.service.web_child import WebChild, web_command

__all__ = ["run_service", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(log_file: Path | None = None) -> None:
    """One line per event on stderr (and ``log_file``), with a timestamp."""
    root = logging.getLogger("surety")
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)


def _notifier(config: Config) -> ServiceNotifier | None:
    if not config.notifications:
        return None
    return Notifier(config, open_catalog(config.service.catalog))


def run_service(
    config_path: Path,
    *,
    once: bool = False,
    tick: float | None = None,
    log_file: Path | None = None,
) -> int:
    """Run the service in the foreground until SIGTERM/SIGINT (``once``: one pass); exit code."""
    setup_logging(log_file)

    def load(path: Path) -> Config:
        loaded = load_config(path)
        if tick is None:
            return loaded
        return replace(loaded, service=replace(loaded.service, tick=tick))  # --tick wins

    config = load(config_path)
    catalog = open_catalog(config.service.catalog)
    lock = ServiceLock(lock_path_for(catalog.path))
    lock.acquire()
    host = connect_host(config.service.libvirt_uri)
    console = (
        WebChild(web_command(config.path, config.web)) if config.web.enabled and not once else None
    )

    def statuses(current: Config) -> Sequence[Any]:
        """Every VM's status, for the RPO check (only when a target wants ``rpo``)."""
        if not any("rpo" in t.events for t in current.notifications.values()):
            return []
        return gather_status(current, host=host, catalog=catalog, now=utc_now()).statuses

    runner = ProcessRunner(config.path)
    try:
        service = Service(
            config=config,
            catalog=catalog,
            host=host,
            runner=runner,
            notifier_factory=_notifier,
            config_loader=load,
            statuses=statuses,
            once=once,
        )
        if console is not None:
            console.start()  # beside the loop; a crash of it never stops the scheduler
        return service.serve()
    finally:
        runner.close()  # the spare worker
        if console is not None:
            console.stop()
        host.close()
        lock.release()
