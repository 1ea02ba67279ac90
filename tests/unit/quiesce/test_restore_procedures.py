"""Restore procedures against a scripted guest: what they write, what they prove, what they refuse.

Their real twin is the replicated-pair scenario in tests/scenarios (real
PostgreSQL and MariaDB members in two guests).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from surety.core.errors import UsageError
from surety.quiesce.procedure import PRIMARY, REPLICA, RestoreRequest, load_procedures, request_role
from surety.quiesce.writer import WriterFailed
from surety.quiesce.writers.mariadb_restore import (
    MariadbRestore,
    gtid_covers,
    parse_gtid_list,
    parse_vertical,
)
from surety.quiesce.writers.postgresql_restore import PostgresqlRestore, conf_quote, conninfo
from surety.restore.mode.hold import DROP_IN, FLAG, lift_script
from surety.testing.fake_guest import FakeGuest, GuestResult

PG_RECORDED = {
    "state": "thawed",
    "clusters": [
        {
            "cluster": "15/main",
            "port": 5432,
            "data_directory": "/var/lib/postgresql/15/main",
            "timeline": 1,
            "archive_dir": None,
        }
    ],
}
MARIADB_RECORDED = {"state": "thawed", "server_id": 11, "gtid_binlog_pos": "0-11-40"}


def test_roles_accept_vendor_words_and_need_a_partner_for_a_replica() -> None:
    assert request_role("standby", "10.0.0.2") == REPLICA
    assert request_role("source", None) == PRIMARY
    assert request_role(None, "10.0.0.2") == REPLICA
    assert request_role(None, None) == PRIMARY
    with pytest.raises(UsageError, match="needs --partner"):
        request_role("replica", None)
    with pytest.raises(UsageError, match="unknown --role"):
        request_role("leader", None)
    with pytest.raises(UsageError, match="--partner is for"):
        request_role("primary", "10.0.0.2")


def test_procedures_are_found_for_applications_held_at_the_snapshot() -> None:
    found = load_procedures(
        {"postgresql": PG_RECORDED, "mariadb": {"state": "failed"}, "fsfreeze": {"state": "thawed"}}
    )
    assert list(found) == ["postgresql"]
    assert found["postgresql"].hold_units == ("postgresql@.service",)


def test_gtid_lists_compare_per_domain() -> None:
    assert parse_gtid_list("0-11-42,1-21-7") == {0: 42, 1: 7}
    assert gtid_covers("0-1234-50", "0-21-50")  # the server id does not matter, the seq does
    assert not gtid_covers("0-1234-49", "0-21-50")
    assert not gtid_covers("0-1-60", "0-21-50,1-21-3")  # a domain not applied at all
    assert gtid_covers("", "")


def test_show_slave_status_vertical_output_is_parsed() -> None:
    text = "*** 1. row ***\n  Slave_IO_Running: Yes\n Last_IO_Error: \n Gtid_Slave_Pos: 0-21-9\n"
    status = parse_vertical(text)
    assert status["Slave_IO_Running"] == "Yes"
    assert status["Gtid_Slave_Pos"] == "0-21-9"


def test_conninfo_and_conf_quoting_survive_quotes() -> None:
    info = conninfo(host="10.0.0.1", password="it's", user=None)
    assert info == "host='10.0.0.1' password='it\\'s'"
    assert conf_quote(info) == "'host=''10.0.0.1'' password=''it\\\\''s'''"


def test_lift_script_removes_flag_and_drop_ins() -> None:
    script = lift_script(["postgresql@.service", "mariadb.service"])
    assert f"rm -f /{FLAG}" in script
    assert "/etc/systemd/system/postgresql@.service.d /etc/systemd/system/mariadb.service.d" in (
        script
    )
    assert f'rm -f "$d/{DROP_IN}"' in script
    assert script.rstrip().endswith("systemctl daemon-reload")


def _shell_guest() -> FakeGuest:
    guest = FakeGuest()
    guest.handlers["*"] = lambda argv: GuestResult(0)
    return guest


def test_postgresql_standby_configuration_rejoins_the_partner() -> None:
    guest = _shell_guest()
    request = RestoreRequest(
        "ab" * 32, "db-1", REPLICA, "10.9.0.2", {"postgresql.password": "s3cret"}
    )
    PostgresqlRestore(guest, PG_RECORDED, request).configure()
    script = next(c[2] for c in guest.commands if c[:2] == ["sh", "-c"] and "signal" in c[2])
    assert 'touch "$D/standby.signal"' in script
    assert 'rm -rf "$D"/pg_replslot/*' in script
    assert "primary_conninfo = 'host=''10.9.0.2'' port=''5432''" in script
    assert "password=''s3cret''" in script
    assert "recovery_target_timeline = 'latest'" in script
    assert "restore_command" not in script.split("SURETY_EOF")[1]  # no archive: streaming only


def test_postgresql_primary_role_needs_archive_recovery_on_a_new_timeline() -> None:
    guest = _shell_guest()
    request = RestoreRequest("cd" * 32, "db-1", PRIMARY)
    PostgresqlRestore(guest, PG_RECORDED, request).configure()
    script = next(c[2] for c in guest.commands if c[:2] == ["sh", "-c"] and "signal" in c[2])
    assert 'touch "$D/recovery.signal"' in script
    assert "restore_command = '/bin/false'" in script


def _mariadb_guest(slave_status: str, partner_pos: str, was_replica: bool = False) -> FakeGuest:
    guest = FakeGuest()
    server_id = {"value": "0"}

    applied = slave_status.split("Gtid_Slave_Pos: ")[1].split("\n", maxsplit=1)[0]
    answers = {
        "SELECT 1": "1",
        "SELECT @@gtid_binlog_pos": "0-11-40",
        "SELECT @@read_only": "1",
        "SELECT @@gtid_slave_pos": applied,
        "SHOW ALL SLAVES STATUS": "replica of x" if was_replica else "",
    }

    def client(argv: Sequence[str]) -> GuestResult:
        sql = argv[-1]
        if "-h" in argv:  # the partner
            answer = partner_pos
        elif sql == "SELECT @@server_id":
            answer = server_id["value"]
        elif "SHOW SLAVE STATUS" in sql:
            answer = slave_status
        else:
            answer = answers.get(sql, "")
        return GuestResult(0, answer.encode())

    def systemctl(argv: Sequence[str]) -> GuestResult:
        conf = guest.files.get("/etc/mysql/mariadb.conf.d/99-surety-restore.cnf", b"")
        server_id["value"] = conf.split(b"server_id = ")[1].split(b"\n")[0].decode()
        return GuestResult(0)

    guest.handlers.update(mariadb=client, systemctl=systemctl)
    guest.handlers["*"] = lambda argv: GuestResult(0, b"/etc/mysql/mariadb.conf.d\n")
    return guest


def test_mariadb_replica_gets_a_new_server_id_and_follows_the_partner_by_slave_pos() -> None:
    status = "Slave_IO_Running: Yes\nSlave_SQL_Running: Yes\nGtid_Slave_Pos: 0-11-45\n"
    guest = _mariadb_guest(status, "0-11-45")
    request = RestoreRequest("ef" * 32, "db-1", REPLICA, "10.9.0.2", {"mariadb.password": "pw"})
    procedure = MariadbRestore(guest, MARIADB_RECORDED, request)
    procedure.configure()
    held = guest.files["/etc/mysql/mariadb.conf.d/99-surety-restore.cnf"].decode()
    assert "skip_slave_start = 1" in held
    assert "read_only = 1" in held
    evidence = procedure.start()
    assert evidence["server_id_at_backup"] == 11
    assert evidence["server_id"] not in (11, None)
    rejoin = next(c[-1] for c in guest.commands if "CHANGE MASTER" in c[-1])
    assert "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos" in rejoin
    assert "MASTER_USE_GTID=slave_pos" in rejoin
    assert rejoin.index("gtid_slave_pos") < rejoin.index("CHANGE MASTER")
    final = guest.files["/etc/mysql/mariadb.conf.d/99-surety-restore.cnf"].decode()
    assert "skip_slave_start" not in final
    assert f"server_id = {evidence['server_id']}" in final


def test_mariadb_former_replica_keeps_the_position_it_applied() -> None:
    status = "Slave_IO_Running: Yes\nSlave_SQL_Running: Yes\nGtid_Slave_Pos: 0-11-45\n"
    guest = _mariadb_guest(status, "0-11-45", was_replica=True)
    request = RestoreRequest("ef" * 32, "db-2", REPLICA, "10.9.0.1")
    procedure = MariadbRestore(guest, MARIADB_RECORDED, request)
    procedure.configure()
    evidence = procedure.start()
    rejoin = next(c[-1] for c in guest.commands if "CHANGE MASTER" in c[-1])
    assert "gtid_slave_pos" not in rejoin  # its binlog may hold errant local transactions
    assert "former replica" in evidence["gtid_slave_pos_from"]


def test_mariadb_replica_that_never_catches_up_fails_with_the_replication_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("surety.quiesce.writers.mariadb_restore.time.sleep", lambda s: None)
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(
        "surety.quiesce.writers.mariadb_restore.time.monotonic", lambda: next(clock)
    )
    status = (
        "Slave_IO_Running: No\nSlave_SQL_Running: Yes\nLast_IO_Errno: 1236\n"
        "Last_IO_Error: Got fatal error 1236\nGtid_Slave_Pos: 0-11-40\n"
    )
    guest = _mariadb_guest(status, "0-11-45")
    request = RestoreRequest("ef" * 32, "db-1", REPLICA, "10.9.0.2")
    procedure = MariadbRestore(guest, MARIADB_RECORDED, request)
    procedure.configure()
    with pytest.raises(WriterFailed, match="1236"):
        procedure.start()
