"""``postgresql``: an application-consistent instant of every running cluster.

discover  ``pg_lsclusters`` (Debian's postgresql-common) lists the online clusters.
prepare   per cluster, a guest-side script opens one psql session (as the
          ``postgres`` OS user, peer authentication) that runs ``CHECKPOINT``
          and ``pg_backup_start(label, fast)``: a non-exclusive base backup,
          held by that session across the snapshot.
freeze    the session writes the marker row ``surety.markers(token, at)`` in
          the ``postgres`` database (on a primary) just before the file systems
          freeze, so verification can prove the data is from this instant.
thaw      ``pg_backup_stop()`` in the same session returns the backup label
          and stop LSN; the restore point records them with the timeline, the
          redo WAL file and the marker.
after-commit  with log truncation on and WAL archiving to a local directory,
          ``pg_archivecleanup`` removes archived WAL older than the backup's
          redo segment - never earlier, never more.
"""

from __future__ import annotations

import base64
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from surety.core.errors import SourceError
from surety.quiesce.channel import GuestChannel
from surety.quiesce.session import GuestSession, guest_script
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterFailed, WriterRecord

__all__ = ["Cluster", "PostgresqlWriter", "archive_dir_from_command", "parse_backup_label"]

_LABEL_START = re.compile(r"START WAL LOCATION: (\S+) \(file ([0-9A-F]{24})\)")
_LABEL_TIMELINE = re.compile(r"START TIMELINE: (\d+)")


@dataclass
class Cluster:
    version: str
    name: str
    port: int
    data_dir: str
    session: GuestSession | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.version}/{self.name}"

    @property
    def bindir(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"


def parse_clusters(text: str) -> list[Cluster]:
    """Online clusters from ``pg_lsclusters --no-header``."""
    clusters = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[3].startswith("online"):
            clusters.append(Cluster(cols[0], cols[1], int(cols[2]), cols[5]))
    return clusters


def parse_backup_label(label: str) -> dict[str, Any]:
    start = _LABEL_START.search(label)
    timeline = _LABEL_TIMELINE.search(label)
    return {
        "start_lsn": start.group(1) if start else None,
        "redo_wal_file": start.group(2) if start else None,
        "timeline": int(timeline.group(1)) if timeline else None,
    }


def archive_dir_from_command(command: str) -> str | None:
    """The local directory an ``archive_command`` copies ``%f`` into, if it says so plainly."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if word.endswith("/%f") and word.startswith("/"):
            return str(PurePosixPath(word).parent)
    return None


class PostgresqlWriter:
    name: ClassVar[str] = "postgresql"
    level: ClassVar[str] = APPLICATION

    def __init__(self, guest: GuestChannel, job: QuiesceJob) -> None:
        self.guest, self.job = guest, job
        self.record = WriterRecord()
        self.clusters: list[Cluster] = []

    def applies(self) -> bool:
        found = self.guest.run(
            ["sh", "-c", "command -v pg_lsclusters && pg_lsclusters --no-header"]
        )
        self.clusters = parse_clusters(found.stdout.decode()) if found.ok else []
        return bool(self.clusters)

    def prepare(self) -> None:
        script = guest_script("postgresql")
        deadline = time.monotonic() + self.job.prepare_timeout
        for cluster in self.clusters:
            session = GuestSession(self.guest, self.name, self.job.token, f"-{cluster.port}")
            cluster.session = session
            label = f"surety {self.job.token}"
            session.start(
                script, self.job.window, [str(cluster.port), self.job.token, label, cluster.bindir]
            )
            session.wait("prepared", deadline)
            self._describe(cluster, session.value("info") or "")

    def _describe(self, cluster: Cluster, info: str) -> None:
        recovery, version, archive_mode, archive_command, data_dir = (info.split("\t") + [""] * 5)[
            :5
        ]
        archive_on = archive_mode in ("on", "always")
        cluster.meta = {
            "cluster": cluster.id,
            "port": cluster.port,
            "server_version_num": version,
            "role": "standby" if recovery == "t" else "primary",
            "data_directory": data_dir or cluster.data_dir,
            "archive_mode": archive_mode,
            "archive_dir": archive_dir_from_command(archive_command) if archive_on else None,
        }

    def freeze(self, deadline: float) -> None:
        for cluster in self.clusters:
            assert cluster.session is not None
            cluster.session.go("freeze", deadline - time.monotonic())
        for cluster in self.clusters:
            assert cluster.session is not None
            cluster.session.wait("frozen", deadline)
            marker = cluster.session.value("marker")
            cluster.meta["marker"] = {"token": self.job.token, "at": marker} if marker else None
        self.record.metadata["summary"] = f"{len(self.clusters)} cluster(s) in backup mode"

    def thaw(self) -> None:
        for cluster in self.clusters:
            if cluster.session is None or cluster.session.pid is None:
                continue
            try:
                self._stop(cluster, cluster.session)
            except SourceError as exc:
                self.record.state = "expired" if self.record.state == "frozen" else "failed"
                self.record.warnings.append(f"{cluster.id}: {exc}")
        self.record.metadata["clusters"] = [c.meta for c in self.clusters]

    def _stop(self, cluster: Cluster, session: GuestSession) -> None:
        if self.record.state != "frozen":
            session.abort()
        else:
            session.go("thaw")
        stopped = session.wait("stopped", time.monotonic() + 60, fatal=())
        if self.record.state == "frozen":
            session.wait("thawed", time.monotonic() + 1)
        lsn, _, label64 = stopped.partition("\t")
        label = base64.b64decode(label64).decode(errors="replace")
        cluster.meta.update(stop_lsn=lsn, backup_label=label, **parse_backup_label(label))

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        if not truncate_logs:
            return {}
        done = []
        for cluster in self.clusters:
            done.append(self._truncate(cluster))
        return {
            "done": all(d["done"] for d in done),
            "detail": "; ".join(d["detail"] for d in done),
            "clusters": done,
        }

    def _truncate(self, cluster: Cluster) -> dict[str, Any]:
        return truncate_cluster(self.guest, {**cluster.meta, "cluster": cluster.id})

    @classmethod
    def truncate_recorded(cls, guest: GuestChannel, metadata: dict[str, Any]) -> dict[str, Any]:
        """Truncation deferred past the commit (``after-verify``), from the point's metadata."""
        done = [truncate_cluster(guest, meta) for meta in metadata.get("clusters", [])]
        return {
            "done": bool(done) and all(d["done"] for d in done),
            "detail": "; ".join(d["detail"] for d in done) or "no cluster recorded",
            "clusters": done,
        }

    def cleanup(self) -> None:
        for cluster in self.clusters:
            if cluster.session is not None:
                cluster.session.remove()


def truncate_cluster(guest: GuestChannel, meta: dict[str, Any]) -> dict[str, Any]:
    """``pg_archivecleanup`` of the cluster's local WAL archive up to its redo WAL file."""
    cluster_id = str(meta.get("cluster", ""))
    archive, redo = meta.get("archive_dir"), meta.get("redo_wal_file")
    if not archive or not redo:
        why = "no local WAL archive directory" if not archive else "no redo WAL file"
        return {"cluster": cluster_id, "done": False, "detail": f"{cluster_id}: {why}"}
    version = cluster_id.partition("/")[0]
    if not re.fullmatch(r"\d+(\.\d+)?", version) or not re.fullmatch(r"[0-9A-F]{24}", str(redo)):
        raise WriterFailed(
            PostgresqlWriter.name, f"unexpected cluster {cluster_id!r} / WAL {redo!r}"
        )
    cleanup = f"/usr/lib/postgresql/{version}/bin/pg_archivecleanup"
    result = guest.run(
        ["runuser", "-u", "postgres", "--", cleanup, "-d", archive, redo], timeout=300
    )
    removed = [
        line.rsplit("/", 1)[-1].strip('"')
        for line in result.stderr.decode(errors="replace").splitlines()
        if "removing file" in line
    ]
    if not result.ok:
        raise WriterFailed(PostgresqlWriter.name, f"pg_archivecleanup: {result.text()[-300:]}")
    return {
        "cluster": cluster_id,
        "done": True,
        "detail": f"{cluster_id}: {len(removed)} archived WAL file(s) before {redo} removed",
        "removed": removed,
        "kept_from": redo,
    }
