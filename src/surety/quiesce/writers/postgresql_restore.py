"""PostgreSQL's restore procedure: never re-use WAL positions the peers already saw.

A restored image winds a cluster's WAL back to the snapshot but keeps its
identity: started as it is, a former primary runs crash recovery on the *same*
timeline and then writes new WAL at LSNs its standby (or the promoted
survivor) already has with other content. The procedure makes the restored
cluster one of two things, by role:

``replica`` (``--partner HOST``; the default when a partner is given)
    start as a standby of the surviving member: ``standby.signal``,
    ``primary_conninfo`` to the partner, ``recovery_target_timeline =
    'latest'``. It follows the survivor's timeline from where the image ends,
    catches up, and loses nothing; roles may be switched afterwards.
``primary`` (a deliberate roll-back of the whole cluster)
    archive recovery (``recovery.signal``) to the end of the available WAL,
    then a *new timeline*; the old members see the fork and must be rewound
    (``pg_rewind``) or re-seeded. The new timeline id is unique only if the
    recovery sees every ``.history`` file: give a shared WAL archive
    (``--set postgresql.restore_command=...``, or the archive directory the
    backup recorded, when it is in the guest).

In both, replication slots of the image are dropped (stale: their positions
belong to the old history) and a stale ``postmaster.pid`` is removed. Success
is checked, not assumed: streaming from the partner on a timeline at least
the recorded one (replica), or out of recovery on a timeline above it
(primary); the evidence goes into the restore result.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from surety.quiesce.channel import GuestChannel
from surety.quiesce.procedure import PRIMARY, REPLICA, RestoreRequest
from surety.quiesce.writer import WriterFailed

__all__ = ["PostgresqlRestore", "conf_quote", "conninfo"]

RECOVERY_KEYS = (
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_timeline",
    "recovery_target_action",
    "promote_trigger_file",
)


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def conninfo(**fields: str | None) -> str:
    """A libpq connection string (``key='value'`` pairs; empty values left out)."""
    parts = []
    for key, value in fields.items():
        if value:
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"{key}='{escaped}'")
    return " ".join(parts)


class PostgresqlRestore:
    name: ClassVar[str] = "postgresql"
    hold_units: ClassVar[tuple[str, ...]] = ("postgresql@.service",)

    def __init__(
        self, guest: GuestChannel, recorded: Mapping[str, Any], request: RestoreRequest
    ) -> None:
        self.guest, self.request = guest, request
        self.clusters: list[dict[str, Any]] = [dict(c) for c in recorded.get("clusters", [])]
        if not self.clusters:
            raise WriterFailed(self.name, "the restore point recorded no PostgreSQL cluster")
        self.evidence: dict[str, Any] = {"role": request.role, "clusters": []}

    # -- with the cluster down ------------------------------------------------
    def configure(self) -> None:
        for cluster in self.clusters:
            self._configure(cluster)

    def _configure(self, cluster: dict[str, Any]) -> None:
        data = cluster["data_directory"]
        found = self._sh(f"ls -1 {shlex.quote(data)}/pg_replslot 2>/dev/null || true")
        cluster["slots_dropped"] = found.split()
        settings = self._recovery_settings(cluster)
        signal = "standby.signal" if self.request.role == REPLICA else "recovery.signal"
        pattern = "|".join(RECOVERY_KEYS)
        lines = "\n".join(f"{key} = {conf_quote(value)}" for key, value in settings.items())
        script = f"""set -e
D={shlex.quote(data)}
test -f "$D/PG_VERSION" || {{ echo "no cluster in $D" >&2; exit 1; }}
rm -f "$D/postmaster.pid" "$D/standby.signal" "$D/recovery.signal"
rm -rf "$D"/pg_replslot/*
sed -i -E '/^[[:space:]]*({pattern})[[:space:]]*=/d' "$D/postgresql.auto.conf"
cat >>"$D/postgresql.auto.conf" <<'SURETY_EOF'
# surety restore {self.request.point_id[:12]}: {self._purpose()}
{lines}
SURETY_EOF
touch "$D/{signal}"
chown postgres:postgres "$D/postgresql.auto.conf" "$D/{signal}"
"""
        self._sh(script)

    def _purpose(self) -> str:
        if self.request.role == REPLICA:
            return f"rejoin {self.request.partner} as a standby"
        return "archive recovery to a new timeline"

    def _recovery_settings(self, cluster: dict[str, Any]) -> dict[str, str]:
        restore_command = self.request.setting(self.name, "restore_command")
        archive = cluster.get("archive_dir")
        if restore_command is None and archive and self._exists(archive):
            restore_command = f"cp {archive}/%f %p"
        settings = {"recovery_target_timeline": "latest"}
        if self.request.role == REPLICA:
            host, _, port = (self.request.partner or "").partition(":")
            settings["primary_conninfo"] = conninfo(
                host=host,
                port=port or str(cluster.get("port") or 5432),
                user=self.request.setting(self.name, "user", "replicator"),
                password=self.request.setting(self.name, "password"),
                application_name=self.request.vm_name.replace("-", "_"),
            )
        # PostgreSQL insists on a restore_command for archive recovery; without an
        # archive, recovery reads pg_wal only (the timeline id may then collide)
        if restore_command or self.request.role == PRIMARY:
            settings["restore_command"] = restore_command or "/bin/false"
        cluster["restore_command"] = settings.get("restore_command")
        return settings

    # -- starting it and proving the result -----------------------------------
    def start(self) -> dict[str, Any]:
        for cluster in self.clusters:
            self.evidence["clusters"].append(self._start(cluster))
        return self.evidence

    def _start(self, cluster: dict[str, Any]) -> dict[str, Any]:
        unit = "postgresql@{}.service".format(cluster["cluster"].replace("/", "-"))
        started = self.guest.run(["systemctl", "start", unit], timeout=300)
        if not started.ok:
            raise self._failure(cluster, f"systemctl start {unit}: {started.text()}")
        self._wait(cluster, "SELECT 1", lambda out: out == "1", "to accept connections", 180)
        before = cluster.get("timeline")
        found: dict[str, Any] = {
            "cluster": cluster["cluster"],
            "timeline_at_backup": before,
            "slots_dropped": cluster["slots_dropped"],
            "restore_command": cluster["restore_command"],
        }
        if self.request.role == REPLICA:
            found.update(self._prove_standby(cluster, before))
        else:
            found.update(self._prove_new_timeline(cluster, before))
        return found

    def _prove_standby(self, cluster: dict[str, Any], before: int | None) -> dict[str, Any]:
        query = (
            "SELECT pg_is_in_recovery(), status, received_tli, sender_host, "
            "pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() "
            "FROM pg_stat_wal_receiver"
        )
        row = self._wait(
            cluster,
            query,
            lambda out: out.startswith("t|streaming|") and out.split("|")[4] == "t",
            f"to stream from {self.request.partner} and replay all it received",
            300,
        ).split("|")
        timeline = int(row[2])
        if before is not None and timeline < before:
            raise self._failure(
                cluster, f"streams timeline {timeline}, below the backup's {before}"
            )
        return {
            "in_recovery": True,
            "streaming_from": row[3],
            "timeline": timeline,
            "replay_lsn": row[5],
            "summary": f"standby of {row[3]} on timeline {timeline}, caught up to {row[5]}",
        }

    def _prove_new_timeline(self, cluster: dict[str, Any], before: int | None) -> dict[str, Any]:
        query = (
            "SELECT pg_is_in_recovery(), "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
        )
        out = self._wait(
            cluster, query, lambda o: o.startswith("f|"), "to finish recovery and promote", 600
        )
        timeline = int(out.split("|")[1])
        if before is not None and timeline <= before:
            raise self._failure(
                cluster, f"still on timeline {timeline} after recovery (the backup's: {before})"
            )
        history = f"{timeline:08X}.history"
        has_history = self._exists(f"{cluster['data_directory']}/pg_wal/{history}")
        return {
            "in_recovery": False,
            "timeline": timeline,
            "history_file": history if has_history else None,
            "summary": f"selected new timeline {timeline} (was {before})",
        }

    # -- guest helpers --------------------------------------------------------
    def _psql(self, cluster: dict[str, Any], sql: str) -> tuple[bool, str]:
        bindir = f"/usr/lib/postgresql/{cluster['cluster'].split('/')[0]}/bin"
        port = str(cluster.get("port") or 5432)
        argv = ["runuser", "-u", "postgres", "--", f"{bindir}/psql", "-X", "-A", "-t", "-q"]
        result = self.guest.run([*argv, "-p", port, "-d", "postgres", "-c", sql], timeout=60)
        return result.ok, result.stdout.decode(errors="replace").strip()

    def _wait(self, cluster: dict[str, Any], sql: str, done: Any, what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            ok, last = self._psql(cluster, sql)
            if ok and done(last):
                return last
            time.sleep(1)
        raise self._failure(cluster, f"did not manage {what} within {timeout:g} s (last: {last!r})")

    def _failure(self, cluster: dict[str, Any], message: str) -> WriterFailed:
        log = f"/var/log/postgresql/postgresql-{cluster['cluster'].replace('/', '-')}.log"
        tail = self._sh(f"tail -n 8 {log} 2>/dev/null || true")
        self.evidence["log_tail"] = tail.splitlines()
        return WriterFailed(self.name, f"{cluster['cluster']} {message}; server log: {tail[-600:]}")

    def _exists(self, path: str) -> bool:
        return self.guest.run(["test", "-e", path], timeout=30).ok

    def _sh(self, script: str) -> str:
        result = self.guest.run(["sh", "-c", script], timeout=120)
        if not result.ok:
            raise WriterFailed(self.name, f"in the guest: {result.text()[-400:]}")
        return result.stdout.decode(errors="replace")
