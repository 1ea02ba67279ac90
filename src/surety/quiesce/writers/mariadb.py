"""``mariadb``: an application-consistent instant of the MariaDB server.

discover  a server answers on its local socket (``mariadb`` as root through
          unix_socket authentication, Debian's default).
prepare   a guest-side script opens one client session and creates
          ``surety.markers`` if needed (not on a replica: see freeze).
freeze    the session writes the marker row (on a source only: a local write
          on a replica would be an errant GTID), then takes ``FLUSH TABLES WITH
          READ LOCK`` - bounded by the window: a lock that cannot be had in time
          (a long query holding a table) is killed (``KILL QUERY``) and the
          writer fails, so the application is never stalled past the window -
          and records the binlog file/position, ``gtid_binlog_pos``,
          ``gtid_current_pos``, ``server_id`` and ``gtid_domain_id``.
thaw      ``UNLOCK TABLES``; if the job dies, the script releases the lock at
          the end of the window on its own (its session closes).
after-commit  with log truncation on: ``PURGE BINARY LOGS TO`` the binlog file
          in use at the snapshot - never earlier, never more.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from surety.core.errors import SourceError
from surety.quiesce.channel import GuestChannel
from surety.quiesce.session import GuestSession, guest_script
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterFailed, WriterRecord

__all__ = ["MariadbWriter"]

CLIENT = ["mariadb", "--protocol=socket", "-u", "root", "-N", "-B"]
_BINLOG_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _fields(text: str | None, count: int) -> list[str]:
    return ((text or "").split("\t") + [""] * count)[:count]


class MariadbWriter:
    name: ClassVar[str] = "mariadb"
    level: ClassVar[str] = APPLICATION

    def __init__(self, guest: GuestChannel, job: QuiesceJob) -> None:
        self.guest, self.job = guest, job
        self.record = WriterRecord()
        self.session: GuestSession | None = None

    def applies(self) -> bool:
        probe = self.guest.run(
            [
                "sh",
                "-c",
                "command -v mariadb >/dev/null && mariadb --protocol=socket -u root -e 'SELECT 1'",
            ],
            timeout=30,
        )
        return probe.ok

    def prepare(self) -> None:
        self.session = GuestSession(self.guest, self.name, self.job.token)
        self.session.start(guest_script("mariadb"), self.job.window, [self.job.token])
        self.session.wait("prepared", time.monotonic() + self.job.prepare_timeout)
        _cid, server_id, domain, log_bin, version, read_only = _fields(
            self.session.value("info"), 6
        )
        self.record.metadata.update(
            server_version=version,
            server_id=int(server_id) if server_id.isdigit() else None,
            gtid_domain_id=int(domain) if domain.isdigit() else None,
            log_bin=log_bin == "1",
            read_only=read_only == "1",
            replica=self.session.value("replica") == "1",
        )

    def freeze(self, deadline: float) -> None:
        assert self.session is not None
        self.session.go("freeze", deadline - time.monotonic())
        try:
            self.session.wait("frozen", deadline)
        except WriterFailed as exc:
            raise WriterFailed(
                self.name,
                "FLUSH TABLES WITH READ LOCK was not granted within the freeze window "
                f"(a long query or LOCK TABLES holds a table?): {exc.detail}",
            ) from exc
        binlog_file, position = _fields(self.session.value("binlog"), 2)
        binlog_pos, current_pos = _fields(self.session.value("gtid"), 2)
        marker = self.session.value("marker")
        self.record.metadata.update(
            marker={"token": self.job.token, "at": marker} if marker else None,
            binlog_file=binlog_file or None,
            binlog_position=int(position) if position.isdigit() else None,
            gtid_binlog_pos=binlog_pos,
            gtid_current_pos=current_pos,
            summary="tables flushed and read-locked",
        )

    def thaw(self) -> None:
        session = self.session
        if session is None or session.pid is None:
            return
        try:
            if self.record.state == "frozen":
                session.go("thaw")
                session.wait("thawed", time.monotonic() + 30)
            else:
                session.abort()
        except SourceError as exc:
            self.record.state = "expired" if self.record.state == "frozen" else "failed"
            self.record.warnings.append(str(exc))

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        if not truncate_logs:
            return {}
        return purge_binlogs(self.guest, self.record.metadata)

    @classmethod
    def truncate_recorded(cls, guest: GuestChannel, metadata: dict[str, Any]) -> dict[str, Any]:
        """Truncation deferred past the commit (``after-verify``), from the point's metadata."""
        return purge_binlogs(guest, metadata)

    def cleanup(self) -> None:
        if self.session is not None:
            self.session.remove()


def purge_binlogs(guest: GuestChannel, metadata: dict[str, Any]) -> dict[str, Any]:
    """``PURGE BINARY LOGS TO`` the binlog file in use at the snapshot."""
    binlog = metadata.get("binlog_file")
    if not binlog:
        return {"done": False, "detail": "binary logging is off: nothing to truncate"}
    if not _BINLOG_NAME.match(binlog):
        raise WriterFailed(MariadbWriter.name, f"unexpected binlog file name {binlog!r}")
    result = guest.run([*CLIENT, "-e", f"PURGE BINARY LOGS TO '{binlog}'"], timeout=300)
    if not result.ok:
        raise WriterFailed(MariadbWriter.name, f"PURGE BINARY LOGS: {result.text()[-300:]}")
    return {"done": True, "detail": f"binary logs before {binlog} purged", "kept_from": binlog}
