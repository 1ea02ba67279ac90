"""Guest-side helpers for application tests: PostgreSQL and MariaDB in a test VM.

Every helper takes a guest-like object (``name`` plus ``sh(script, timeout)``
that runs ``sh -c SCRIPT`` as root through the guest agent, raises on a
non-zero exit and returns the result with ``stdout`` bytes): the ``Guest`` of
``tests/vm/conftest.py``. Nothing here needs python in the guest; background
work (pgbench, the commit-ordered loads, a lock holder) runs detached with
``nohup setsid`` and a pid file in ``/run`` so that it outlives the agent call
and can be stopped as a process group.

Waits always have a timeout and fail with an assertion that names the guest
and what did not happen.

Facts about the test guest these helpers rely on (Debian 12, TCG):

- PostgreSQL 15, cluster ``15/main`` on port 5432, peer authentication for
  the ``postgres`` OS user; server tools in ``/usr/lib/postgresql/15/bin``.
- MariaDB 10.11, root through unix_socket. ``FLUSH TABLES WITH READ LOCK``
  does *not* wait for a long ``SELECT`` there (10.4+ flushes tables when the
  last user closes them) but waits for a running write statement or a table
  held by ``LOCK TABLES ... WRITE``; the latter also blocks ``BACKUP STAGE``.
- While the guest file systems are frozen the agent refuses everything but
  ``guest-ping``, ``guest-info``, ``guest-sync*`` and ``guest-fsfreeze-*``.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol

import libvirt

from tests.guests import agent, testvm
from tests.vm.conftest import Guest

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_UNIT = "postgresql@15-main"
WAL_ARCHIVE = "/var/lib/postgresql/wal_archive"
ARCHIVE_COMMAND = f"test ! -f {WAL_ARCHIVE}/%f && cp %p {WAL_ARCHIVE}/%f"
MARIADB_CONF = "/etc/mysql/mariadb.conf.d/90-surety-test.cnf"
MARIADB_BINLOG = "/var/lib/mysql/mariadb-bin"
MARIADB_SERVER_ID = 11
WAL_SEGMENT_RE = re.compile(r"[0-9A-F]{24}")
RUN = "/run/surety-test"
"""Prefix of the pid and log files of background jobs in the guest."""


class GuestShell(Protocol):
    """What the helpers need of a guest (``tests.vm.conftest.Guest`` has it)."""

    name: str

    def sh(self, script: str, timeout: float = 300) -> agent.ExecResult: ...


# --------------------------------------------------------------------------
# small building blocks


def sql_literal(text: str) -> str:
    """A string as an SQL literal (standard quoting, valid in both databases)."""
    return "'" + text.replace("'", "''") + "'"


def heredoc(command: str, body: str) -> str:
    """Shell text running ``command`` with ``body`` on its stdin, verbatim."""
    return f"{command} <<'SURETY_TEST_EOF'\n{body}\nSURETY_TEST_EOF\n"


def wait_in_guest(
    guest: GuestShell, condition: str, what: str, timeout: float = 60, interval: float = 0.5
) -> float:
    """Re-run the shell ``condition`` in the guest until it exits 0; seconds waited.

    The loop runs inside the guest (one agent call). On timeout the assertion
    message names the guest and ``what`` and shows the condition's last output.
    """
    script = (
        f"end=$(( $(date +%s) + {math.ceil(timeout)} ))\n"
        f"until ( {condition} ) >/dev/null 2>&1; do\n"
        f'  if [ "$(date +%s)" -ge "$end" ]; then\n'
        f"    echo SURETY-TIMEOUT; ( {condition} ) 2>&1 | tail -n 5; exit 0\n"
        f"  fi\n"
        f"  sleep {interval}\n"
        "done\n"
        "echo SURETY-READY\n"
    )
    start = time.monotonic()
    output = guest.sh(script, timeout=timeout + 60).stdout.decode(errors="replace")
    assert output.startswith("SURETY-READY"), (
        f"{guest.name}: {what} not within {timeout:.0f} s; last output:\n"
        + output.removeprefix("SURETY-TIMEOUT\n")
    )
    return time.monotonic() - start


def start_detached(guest: GuestShell, job: str, command: str) -> None:
    """Start ``command`` (shell text) in its own session; pid in ``RUN-JOB.pid``.

    Its stdout and stderr go to ``RUN-JOB.log``. Starting a job that is still
    running is an error.
    """
    pid_file, log_file = f"{RUN}-{job}.pid", f"{RUN}-{job}.log"
    guest.sh(
        f'if [ -f {pid_file} ] && kill -0 "$(cat {pid_file})" 2>/dev/null; then\n'
        f"  echo '{job} is already running' >&2; exit 1\n"
        "fi\n"
        f"nohup setsid sh -c {shlex.quote(command)} >{log_file} 2>&1 </dev/null &\n"
        f"echo $! >{pid_file}\n"
    )


def stop_detached(guest: GuestShell, job: str, timeout: float = 30) -> None:
    """SIGTERM the process group of a detached job and wait until it is gone.

    procps ``/bin/kill``: dash's builtin takes no ``--`` before a negative
    pid. ``runuser`` needs ~2 s to pass SIGTERM on and reap its child.
    Idempotent: a job that is not running (or never ran) is fine.
    """
    pid_file = f"{RUN}-{job}.pid"
    guest.sh(
        f"[ -f {pid_file} ] || exit 0\n"
        f'/bin/kill -s TERM -- "-$(cat {pid_file})" 2>/dev/null || true'
    )
    wait_in_guest(
        guest,
        f'[ ! -f {pid_file} ] || ! /bin/kill -s 0 -- "-$(cat {pid_file})"',
        f"background job {job} to stop",
        timeout=timeout,
    )
    guest.sh(f"rm -f {pid_file}")


def job_log(guest: GuestShell, job: str) -> str:
    """What a detached job wrote so far (for assertion messages)."""
    return guest.sh(f"cat {RUN}-{job}.log 2>/dev/null || true").stdout.decode(errors="replace")


def write_random_file(guest: GuestShell, path: str, mib: int) -> None:
    """Fill ``path`` with ``mib`` MiB of random (incompressible) data and sync.

    Makes a backup's copy phase take a while (~30 MiB/s in a TCG guest).
    """
    guest.sh(f"head -c {mib}M /dev/urandom >{shlex.quote(path)} && sync", timeout=600)


def guest_file_exists(guest: GuestShell, path: str) -> bool:
    """True if ``path`` exists in the guest."""
    out = guest.sh(f"if [ -e {shlex.quote(path)} ]; then echo yes; else echo no; fi").stdout
    return out.strip() == b"yes"


# --------------------------------------------------------------------------
# PostgreSQL


def psql(guest: GuestShell, sql: str, database: str = "postgres", timeout: float = 120) -> str:
    """Run SQL (one or more statements, each in autocommit) as postgres; its output.

    Unaligned, tuples only, quiet: one line per row, ``|`` between columns.
    Stops at the first error (the guest command fails).
    """
    command = (
        f"runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d {shlex.quote(database)}"
    )
    return guest.sh(heredoc(command, sql), timeout=timeout).stdout.decode().strip()


def restart_postgresql(guest: GuestShell, timeout: float = 120) -> None:
    """Restart the 15/main cluster and wait until it accepts connections."""
    guest.sh(f"systemctl restart {PG_UNIT}", timeout=timeout)
    wait_postgresql_ready(guest, timeout)


def wait_postgresql_ready(guest: GuestShell, timeout: float = 120) -> float:
    """Wait until ``pg_isready`` says the server accepts connections."""
    return wait_in_guest(guest, "pg_isready -q", "PostgreSQL to accept connections", timeout)


def enable_wal_archiving(guest: GuestShell) -> None:
    """Archive every WAL segment to ``WAL_ARCHIVE`` (ALTER SYSTEM + restart)."""
    guest.sh(
        f"mkdir -p {WAL_ARCHIVE} && chown postgres:postgres {WAL_ARCHIVE} "
        f"&& chmod 700 {WAL_ARCHIVE}"
    )
    psql(
        guest,
        "ALTER SYSTEM SET wal_level = 'replica';\n"
        "ALTER SYSTEM SET archive_mode = 'on';\n"
        f"ALTER SYSTEM SET archive_command = {sql_literal(ARCHIVE_COMMAND)};",
    )
    restart_postgresql(guest)
    settings = psql(guest, "SELECT current_setting('archive_mode'), current_setting('wal_level');")
    assert settings == "on|replica", f"{guest.name}: archiving not enabled: {settings}"


def wal_archive(guest: GuestShell) -> list[str]:
    """Sorted names of the files in the WAL archive (segments, .backup, .history)."""
    out = guest.sh(f"ls -1 {WAL_ARCHIVE}").stdout.decode()
    return sorted(out.split())


def wal_segments(guest: GuestShell) -> list[str]:
    """Sorted names of the WAL segment files (24 hex digits) in the archive."""
    return [name for name in wal_archive(guest) if WAL_SEGMENT_RE.fullmatch(name)]


def switch_wal(guest: GuestShell, n: int, timeout: float = 120) -> list[str]:
    """Write a little and switch to a new WAL segment ``n`` times; wait until archived.

    Returns the names of the segments completed by the switches.
    """
    rounds = "\n".join(
        "INSERT INTO surety_test_walfill SELECT generate_series(1, 1000);\n"
        "SELECT pg_walfile_name(pg_switch_wal());"
        for _ in range(n)
    )
    out = psql(guest, f"CREATE TABLE IF NOT EXISTS surety_test_walfill (x int);\n{rounds}")
    switched = out.split()
    assert len(switched) == n, f"{guest.name}: pg_switch_wal returned {switched}"
    wait_in_guest(
        guest,
        f"test -f {WAL_ARCHIVE}/{switched[-1]} || {{ runuser -u postgres -- psql -X -c "
        "'SELECT * FROM pg_stat_archiver'; exit 1; }",
        f"WAL segment {switched[-1]} to be archived",
        timeout,
    )
    return switched


def start_pgbench(guest: GuestShell, seconds: int, clients: int = 2, scale: int = 1) -> None:
    """Run pgbench (TPC-B-like) in database ``bench`` in the background for ``seconds``.

    Creates and initialises ``bench`` the first time; returns once the pgbench
    clients are connected.
    """
    guest.sh(
        "runuser -u postgres -- psql -X -q -d bench -c 'SELECT 1 FROM pgbench_branches LIMIT 1' "
        ">/dev/null 2>&1 && exit 0\n"
        "runuser -u postgres -- createdb bench 2>/dev/null || true\n"
        f"runuser -u postgres -- {PG_BIN}/pgbench -i -q -s {scale} bench 2>&1\n",
        timeout=300,
    )
    start_detached(
        guest,
        "pgbench",
        f"exec runuser -u postgres -- {PG_BIN}/pgbench -n -c {clients} -T {seconds} bench",
    )
    wait_in_guest(
        guest,
        '[ "$(runuser -u postgres -- psql -X -A -t -c "SELECT count(*) FROM pg_stat_activity '
        f"WHERE datname = 'bench' AND application_name = 'pgbench'\")\" -ge {clients} ]",
        "pgbench clients to connect",
        timeout=60,
    )


def stop_pgbench(guest: GuestShell) -> None:
    """Stop a pgbench started by :func:`start_pgbench` (idempotent)."""
    stop_detached(guest, "pgbench")


PG_LOAD_TABLE = (
    "CREATE TABLE IF NOT EXISTS load "
    "(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());"
)


def start_pg_load(guest: GuestShell, pause: float = 0.05) -> None:
    """Insert into ``postgres.public.load`` one row per transaction, in commit order.

    One long-lived psql session (single client, autocommit) reads an endless
    stream of inserts, so ids are committed in increasing order without gaps:
    any crash-consistent copy holds exactly the ids 1..k. Returns once rows
    arrive.
    """
    psql(guest, PG_LOAD_TABLE)
    before = int(psql(guest, "SELECT count(*) FROM load;"))
    start_detached(
        guest,
        "pg-load",
        f"while :; do echo 'INSERT INTO load DEFAULT VALUES;'; sleep {pause}; done"
        " | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres",
    )
    wait_in_guest(
        guest,
        "[ \"$(runuser -u postgres -- psql -X -A -t -c 'SELECT count(*) FROM load')\" "
        f"-ge {before + 5} ] || {{ tail -n 5 {RUN}-pg-load.log; exit 1; }}",
        "the PostgreSQL load to insert rows",
        timeout=60,
    )


def stop_pg_load(guest: GuestShell) -> None:
    """Stop the load of :func:`start_pg_load` (idempotent)."""
    stop_detached(guest, "pg-load")


def pg_load_ids(guest: GuestShell) -> list[int]:
    """All ids in ``load``, ascending."""
    return [int(x) for x in psql(guest, "SELECT id FROM load ORDER BY id;").split()]


def pg_insert_load_row(guest: GuestShell) -> int:
    """Insert one row into ``load`` now (own transaction); its id."""
    return int(psql(guest, "INSERT INTO load DEFAULT VALUES RETURNING id;"))


def pg_marker(guest: GuestShell, token: str) -> str | None:
    """The ``at`` of the marker row ``token`` in ``postgres.surety.markers``, or None."""
    out = psql(guest, f"SELECT at FROM surety.markers WHERE token = {sql_literal(token)};")
    return out or None


def pg_amcheck(guest: GuestShell, timeout: float = 600) -> str:
    """``pg_amcheck --all`` (heap and B-tree indexes of every database); its output.

    Installs the amcheck extension where missing; the guest command fails
    (AgentError with the report) if any corruption is found.
    """
    return (
        guest.sh(
            f"runuser -u postgres -- {PG_BIN}/pg_amcheck --all --install-missing 2>&1",
            timeout=timeout,
        )
        .stdout.decode(errors="replace")
        .strip()
    )


# --------------------------------------------------------------------------
# MariaDB


def mariadb(guest: GuestShell, sql: str, timeout: float = 120) -> str:
    """Run SQL as root (batch, no column names); its output, tab-separated.

    Stops at the first error (the guest command fails).
    """
    return guest.sh(heredoc("mariadb -N -B", sql), timeout=timeout).stdout.decode().strip()


def wait_mariadb_ready(guest: GuestShell, timeout: float = 120) -> float:
    """Wait until MariaDB answers a query."""
    return wait_in_guest(guest, "mariadb -e 'SELECT 1'", "MariaDB to answer", timeout)


def restart_mariadb(guest: GuestShell, timeout: float = 180) -> None:
    """Restart MariaDB and wait until it answers."""
    guest.sh("systemctl restart mariadb", timeout=timeout)
    wait_mariadb_ready(guest, timeout)


def enable_binlog(guest: GuestShell) -> None:
    """Turn on the binary log (ROW, GTID domain 0, server_id 11) and restart."""
    config = (
        "[mariadbd]\n"
        f"log_bin={MARIADB_BINLOG}\n"
        f"server_id={MARIADB_SERVER_ID}\n"
        "binlog_format=ROW\n"
        "gtid_domain_id=0\n"
    )
    guest.sh(heredoc(f"cat >{MARIADB_CONF}", config.rstrip("\n")))
    restart_mariadb(guest)
    status = mariadb(guest, "SELECT @@log_bin, @@server_id, @@binlog_format;")
    assert status.split() == ["1", str(MARIADB_SERVER_ID), "ROW"], (
        f"{guest.name}: binary log not enabled: {status}"
    )


def binlogs(guest: GuestShell) -> list[str]:
    """Binary log file names, oldest first (``SHOW BINARY LOGS``)."""
    rows = mariadb(guest, "SHOW BINARY LOGS;").splitlines()
    return [row.split("\t")[0] for row in rows]


LOADTEST_SCHEMA = (
    "CREATE DATABASE IF NOT EXISTS loadtest;\n"
    "CREATE TABLE IF NOT EXISTS loadtest.load (id bigint AUTO_INCREMENT PRIMARY KEY, "
    "at datetime(6) NOT NULL DEFAULT now(6)) ENGINE=InnoDB;\n"
    "CREATE TABLE IF NOT EXISTS loadtest.fill (x int) ENGINE=InnoDB;\n"
    "CREATE TABLE IF NOT EXISTS loadtest.blocker (x int) ENGINE=InnoDB;"
)


def flush_binlogs(guest: GuestShell, n: int) -> list[str]:
    """Write a row and ``FLUSH BINARY LOGS``, ``n`` times; the binlog list after."""
    rounds = "\n".join(
        "INSERT INTO loadtest.fill VALUES (1);\nFLUSH BINARY LOGS;" for _ in range(n)
    )
    mariadb(guest, f"{LOADTEST_SCHEMA}\n{rounds}")
    return binlogs(guest)


def start_mariadb_load(guest: GuestShell, pause: float = 0.05) -> None:
    """Insert into ``loadtest.load`` one row per transaction, in commit order.

    The MariaDB twin of :func:`start_pg_load`: one ``mariadb`` client in
    autocommit reads an endless stream of inserts. Returns once rows arrive.
    """
    mariadb(guest, LOADTEST_SCHEMA)  # `load` is a reserved word: always say loadtest.load
    before = int(mariadb(guest, "SELECT count(*) FROM loadtest.load;"))
    start_detached(
        guest,
        "mariadb-load",
        f"while :; do echo 'INSERT INTO loadtest.load () VALUES ();'; sleep {pause}; done"
        " | mariadb --unbuffered loadtest",
    )
    wait_in_guest(
        guest,
        f"[ \"$(mariadb -N -B -e 'SELECT count(*) FROM loadtest.load')\" -ge {before + 5} ] "
        f"|| {{ tail -n 5 {RUN}-mariadb-load.log; exit 1; }}",
        "the MariaDB load to insert rows",
        timeout=60,
    )


def stop_mariadb_load(guest: GuestShell) -> None:
    """Stop the load of :func:`start_mariadb_load` (idempotent)."""
    stop_detached(guest, "mariadb-load")


def mariadb_load_ids(guest: GuestShell) -> list[int]:
    """All ids in ``loadtest.load``, ascending."""
    out = mariadb(guest, "SELECT id FROM loadtest.load ORDER BY id;")
    return [int(x) for x in out.split()]


def mariadb_insert_load_row(guest: GuestShell, timeout: float = 10) -> int:
    """Insert one row into ``loadtest.load``; its id. Fails if it takes over ``timeout`` s."""
    out = guest.sh(
        f"timeout {timeout} mariadb -N -B -e "
        "'INSERT INTO loadtest.load () VALUES (); SELECT LAST_INSERT_ID();'",
        timeout=timeout + 30,
    )
    return int(out.stdout.decode())


def mariadb_marker(guest: GuestShell, token: str) -> str | None:
    """The ``at`` of the marker row ``token`` in ``surety.markers``, or None."""
    out = mariadb(guest, f"SELECT at FROM surety.markers WHERE token = {sql_literal(token)};")
    return out or None


def mysqlcheck(guest: GuestShell, timeout: float = 600) -> str:
    """``mysqlcheck --all-databases``; its report (one ``db.table  OK`` line each).

    The guest command fails if mysqlcheck itself reports an error.
    """
    out = guest.sh("mysqlcheck --all-databases 2>&1", timeout=timeout).stdout
    return out.decode(errors="replace").strip()


BLOCKER_ALIAS = "surety_test_blocker"


@contextmanager
def flush_tables_blocked(guest: GuestShell, seconds: int = 300) -> Iterator[None]:
    """Hold ``LOCK TABLES loadtest.blocker WRITE`` in a session for the duration.

    While it is held ``FLUSH TABLES WITH READ LOCK`` (and ``BACKUP STAGE``)
    waits, so a MariaDB writer cannot quiesce; writes to other tables, such
    as ``loadtest.load``, go on. The session is killed on exit.
    """
    mariadb(guest, LOADTEST_SCHEMA)
    start_detached(
        guest,
        "blocker",
        "exec mariadb -e "
        + shlex.quote(
            f"LOCK TABLES loadtest.blocker WRITE; SELECT SLEEP({seconds}) AS {BLOCKER_ALIAS}"
        ),
    )
    try:
        wait_in_guest(
            guest,
            'mariadb -N -B -e "SELECT id FROM information_schema.processlist '
            f"WHERE info LIKE '%{BLOCKER_ALIAS}%' AND state = 'User sleep'\" | grep -q .",
            "the lock holder to hold loadtest.blocker",
            timeout=30,
        )
        yield
    finally:
        _kill_blocker(guest)
        stop_detached(guest, "blocker")


def _kill_blocker(guest: GuestShell) -> None:
    """KILL the lock holder's connection (the server then drops its locks)."""
    guest.sh(
        'for id in $(mariadb -N -B -e "SELECT id FROM information_schema.processlist '
        f"WHERE info LIKE '%{BLOCKER_ALIAS}%' AND id <> connection_id()\"); do "
        'mariadb -e "KILL $id" || true; done'
    )


# --------------------------------------------------------------------------
# booting a restored disk


def boot_restored(name: str, raw_image: Path, app: str = "none", timeout: float = 300) -> Guest:
    """Boot a new test VM ``name`` from a restored raw disk image; return it running.

    The raw image is converted to qcow2 in the VM's directory; the domain is
    built like ``testvm.up`` builds one (same kernel, initrd and command line,
    with ``systemd.wants=`` for ``app``). The app is *not* enabled or started
    by us: it must come up from the restored disk by itself, and this waits
    until it accepts connections. Remove the VM with ``testvm.down(name)``
    (also after a failure here), or use :func:`restored_guest`.
    """
    testvm.validate_name(name)
    conn = agent.connect(testvm.URI)
    if testvm.lookup(conn, name) is not None:
        raise testvm.VmError(f"domain {name} already exists")
    image = testvm.stage_image(testvm.build_guest())
    accel = testvm.choose_accel(image, conn)
    vm_dir = testvm.VM_ROOT / name
    if vm_dir.exists():
        shutil.rmtree(vm_dir)
    testvm.make_public_dir(vm_dir)
    disk = vm_dir / "vda.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw_image), str(disk)],
        check=True,
    )
    disk.chmod(0o644)
    testvm.make_qemu_dir(vm_dir / "backup")
    xml = testvm.domain_xml(
        name, image, vm_dir=vm_dir, accel=accel, app=app, memory_mib=1024, vcpus=2, net=False
    )
    (vm_dir / "domain.xml").write_text(xml)
    dom = conn.defineXML(xml)
    dom.create()
    deadline = time.monotonic() + timeout
    try:
        agent.wait_for_agent(dom, timeout=timeout)
        if app in testvm.APPS:
            agent.wait_for_command(
                dom, testvm.APPS[app].ready, timeout=max(1.0, deadline - time.monotonic())
            )
    except (agent.AgentError, libvirt.libvirtError) as exc:
        raise testvm.VmError(
            f"restored VM {name} did not come up: {exc}\n--- last lines of console.log ---\n"
            f"{testvm.console_tail(vm_dir)}"
        ) from exc
    return Guest(name, conn)


@contextmanager
def restored_guest(name: str, raw_image: Path, app: str = "none") -> Iterator[Guest]:
    """:func:`boot_restored` for the duration of a ``with`` block, then removed."""
    try:
        yield boot_restored(name, raw_image, app)
    finally:
        with suppress(testvm.VmError, libvirt.libvirtError):
            testvm.down(name)
