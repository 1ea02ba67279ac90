"""MariaDB's restore procedure: a new server identity, GTID state consistent with the peers.

A restored image of a MariaDB server that accepted writes winds its GTID
sequence back but keeps its ``server_id``: its next transactions re-use GTIDs
(``domain-server-seq``) the replicas already applied with other content. A
replica that reconnects first stops with error 1236; one that reconnects after
the restored server wrote *silently skips* the re-used GTIDs. The procedure:

1. while the server is down: a config file (``99-surety-restore.cnf``) gives it
   a *new* ``server_id`` (the counterpart of Active Directory's new
   invocationID), ``skip_slave_start`` and ``read_only`` - it comes up
   isolated;
2. ``replica`` (``--partner HOST``): ``SET GLOBAL gtid_slave_pos =
   @@gtid_binlog_pos`` (what a former source holds; a former replica keeps the
   position it applied, as its binlog may hold local errant transactions),
   ``CHANGE MASTER TO`` the
   survivor with ``master_use_gtid=slave_pos`` (``current_pos`` after a
   server_id change fails with error 1950), ``START SLAVE``, and wait until
   both threads run and every GTID domain the partner logged is applied here.
   The new ``server_id`` is what makes the replica accept the post-backup
   transactions it originally wrote itself (with the old id they are silently
   filtered as its own). It stays read-only, as a replica should;
   ``primary``: no replication, writable, under the new identity;
3. the config file is rewritten to what should stay (new ``server_id``, and
   ``read_only`` for a replica), and the evidence recorded.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from surety.quiesce.channel import GuestChannel
from surety.quiesce.procedure import REPLICA, RestoreRequest
from surety.quiesce.writer import WriterFailed

__all__ = ["MariadbRestore", "gtid_covers", "parse_gtid_list", "parse_vertical"]

CLIENT = ["mariadb", "--protocol=socket", "-u", "root", "-N", "-B"]
CONF_DIRS = ("/etc/mysql/mariadb.conf.d", "/etc/my.cnf.d")
CONF_NAME = "99-surety-restore.cnf"


def parse_gtid_list(text: str) -> dict[int, int]:
    """``0-11-42,1-21-7`` -> {domain: seq}."""
    found: dict[int, int] = {}
    for item in text.replace(" ", "").split(","):
        parts = item.split("-")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            found[int(parts[0])] = int(parts[2])
    return found


def gtid_covers(ours: str, theirs: str) -> bool:
    """Every domain ``theirs`` logged is applied here at least as far."""
    mine = parse_gtid_list(ours)
    return all(mine.get(domain, -1) >= seq for domain, seq in parse_gtid_list(theirs).items())


def parse_vertical(text: str) -> dict[str, str]:
    """``SHOW SLAVE STATUS\\G`` output -> {field: value}."""
    rows = (line.strip().partition(": ") for line in text.splitlines())
    return {key: value for key, sep, value in rows if sep}


def sql_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MariadbRestore:
    name: ClassVar[str] = "mariadb"
    hold_units: ClassVar[tuple[str, ...]] = ("mariadb.service",)

    def __init__(
        self, guest: GuestChannel, recorded: Mapping[str, Any], request: RestoreRequest
    ) -> None:
        self.guest, self.recorded, self.request = guest, dict(recorded), request
        self.old_id = self.recorded.get("server_id")
        asked = request.setting(self.name, "server_id")
        if asked is not None and not asked.isdigit():
            raise WriterFailed(self.name, f"server_id must be a number, not {asked!r}")
        self.new_id = int(asked) if asked else self._fresh_id()
        self.conf = ""
        self.evidence: dict[str, Any] = {"role": request.role}

    def _fresh_id(self) -> int:
        while True:
            candidate = 1000 + secrets.randbelow(2**31 - 1001)
            if candidate != self.old_id:
                return candidate

    # -- with the server down -------------------------------------------------
    def configure(self) -> None:
        found = self._sh(
            "for d in " + " ".join(CONF_DIRS) + '; do [ -d "$d" ] && { echo "$d"; break; }; done'
        ).strip()
        if not found:
            raise WriterFailed(self.name, f"no MariaDB config directory ({', '.join(CONF_DIRS)})")
        self.conf = f"{found}/{CONF_NAME}"
        self._write_conf(hold=True)

    def _write_conf(self, hold: bool) -> None:
        lines = [
            f"# surety restore {self.request.point_id[:12]}: new server identity "
            f"(was server_id {self.old_id})",
            "[mariadbd]",
            f"server_id = {self.new_id}",
        ]
        if hold:
            lines += ["skip_slave_start = 1", "read_only = 1"]
        elif self.request.role == REPLICA:
            lines.append("read_only = 1")
        self.guest.write_file(self.conf, ("\n".join(lines) + "\n").encode())
        self._sh(f"chmod 644 {self.conf}")

    # -- starting it and proving the result -----------------------------------
    def start(self) -> dict[str, Any]:
        started = self.guest.run(["systemctl", "start", "mariadb.service"], timeout=300)
        if not started.ok:
            raise self._failure(f"systemctl start mariadb: {started.text()}")
        self._wait(lambda: self._sql("SELECT 1") == "1", "to answer", 180)
        running = int(self._sql("SELECT @@server_id"))
        if running != self.new_id:
            raise self._failure(f"runs with server_id {running}, not the new {self.new_id}")
        self.evidence.update(
            server_id_at_backup=self.old_id,
            server_id=running,
            gtid_binlog_pos_at_backup=self.recorded.get("gtid_binlog_pos"),
            gtid_binlog_pos_restored=self._sql("SELECT @@gtid_binlog_pos"),
        )
        if self.request.role == REPLICA:
            self._rejoin()
        else:
            self._sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
            self.evidence["summary"] = f"new server_id {running} (was {self.old_id}), writable"
        self._write_conf(hold=False)
        self.evidence["read_only"] = self._sql("SELECT @@read_only") == "1"
        return self.evidence

    def _rejoin(self) -> None:
        host, _, port = (self.request.partner or "").partition(":")
        user = self.request.setting(self.name, "user", "repl") or "repl"
        password = self.request.setting(self.name, "password", "") or ""
        # A former source's own history is its binlog; a former replica's position is
        # what it applied (gtid_slave_pos, crash-safe in mysql.gtid_slave_pos): its
        # binlog may hold local transactions the partner never had.
        was_replica = bool(self._sql("SHOW ALL SLAVES STATUS"))
        position = "" if was_replica else "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos; "
        self._sql(
            f"STOP SLAVE; RESET SLAVE ALL; {position}"
            f"CHANGE MASTER TO MASTER_HOST={sql_quote(host)}, MASTER_PORT={int(port or 3306)}, "
            f"MASTER_USER={sql_quote(user)}, MASTER_PASSWORD={sql_quote(password)}, "
            "MASTER_USE_GTID=slave_pos; START SLAVE"
        )
        self.evidence["gtid_slave_pos_from"] = (
            "the image's applied position (a former replica)"
            if was_replica
            else "the image's binlog (a former source)"
        )
        remote = [*CLIENT[:1], "-h", host, "-P", port or "3306", "-u", user, f"-p{password}"]
        state: dict[str, Any] = {}

        def caught_up() -> bool:
            status = parse_vertical(self._sql("SHOW SLAVE STATUS\\G", vertical=True))
            partner = self.guest.run([*remote, "-N", "-B", "-e", "SELECT @@gtid_binlog_pos"])
            applied = self._sql("SELECT @@gtid_slave_pos")
            state.update(status=status, partner=partner.stdout.decode().strip(), applied=applied)
            running = status.get("Slave_IO_Running") == status.get("Slave_SQL_Running") == "Yes"
            return running and partner.ok and gtid_covers(applied, state["partner"])

        self._wait(caught_up, f"to replicate from {host} and apply all it logged", 300, state)
        status = state["status"]
        self.evidence.update(
            replicating_from=host,
            slave_io_running=status.get("Slave_IO_Running"),
            slave_sql_running=status.get("Slave_SQL_Running"),
            gtid_slave_pos=state["applied"],
            partner_gtid_binlog_pos=state["partner"],
            summary=(
                f"new server_id {self.new_id} (was {self.old_id}); replica of {host}, "
                f"caught up to {state['partner']}"
            ),
        )

    # -- guest helpers --------------------------------------------------------
    def _sql(self, sql: str, vertical: bool = False) -> str:
        argv = [*CLIENT[:4], "-e", sql] if vertical else [*CLIENT, "-e", sql]
        result = self.guest.run(argv, timeout=60)
        if not result.ok:
            raise WriterFailed(self.name, f"{sql[:60]}...: {result.text()[-300:]}")
        return result.stdout.decode(errors="replace").strip()

    def _wait(
        self, done: Any, what: str, timeout: float, state: dict[str, Any] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if done():
                    return
            except WriterFailed as exc:
                last = exc.detail
            time.sleep(1)
        seen = state.get("status") if state else None
        detail = ""
        if seen:
            detail = (
                f" (IO {seen.get('Slave_IO_Running')}: {seen.get('Last_IO_Error')!r}; "
                f"SQL {seen.get('Slave_SQL_Running')}: {seen.get('Last_SQL_Error')!r})"
            )
        raise self._failure(f"did not manage {what} within {timeout:g} s{detail} {last}")

    def _failure(self, message: str) -> WriterFailed:
        tail = self.guest.run(
            ["sh", "-c", "journalctl -u mariadb -n 8 --no-pager 2>/dev/null | tail -n 8"]
        )
        self.evidence["log_tail"] = tail.stdout.decode(errors="replace").splitlines()
        return WriterFailed(self.name, message)

    def _sh(self, script: str) -> str:
        result = self.guest.run(["sh", "-c", script], timeout=120)
        if not result.ok:
            raise WriterFailed(self.name, f"in the guest: {result.text()[-400:]}")
        return result.stdout.decode(errors="replace")
