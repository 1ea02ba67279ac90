"""Item-level recovery without a VM: names, argv, the point's apps, the guest steps, the file.

The guest side runs against ``FakeGuest`` and a fake ``guest-file-*`` agent;
the real twin is ``tests/vm/test_items.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from surety.cli.main import cli
from surety.core.errors import LabError, RestorePointNotFound, TargetError, UsageError
from surety.core.progress import NullProgress
from surety.testing.fake_guest import FakeGuest, GuestResult
from surety.testing.fake_hypervisor import FakeHypervisor
from surety.verify import items
from surety.verify.dumptools import (
    DumpRequest,
    check_request,
    cluster_port,
    dump_argv,
    one_line,
    ready_argv,
)
from surety.verify.items import (
    ItemsOptions,
    atomic_file,
    check_target,
    copy_out,
    recorded_app,
)
from tests.unit.conftest import make_manifest

PG = DumpRequest("postgresql", "postgres", ("victim",))
MARIA = DumpRequest("mariadb", "shop", ("orders", "lines"))


# -- names and argv ------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_",
    [
        PG,
        DumpRequest("postgresql", "app_1", ("public.victim", "audit.log_2024"), "custom"),
        MARIA,
        DumpRequest("mariadb", "shop", ("order$items",)),
    ],
)
def test_good_requests_pass(request_: DumpRequest) -> None:
    check_request(request_)


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (DumpRequest("oracle", "x", ("t",)), "unknown application"),
        (DumpRequest("mariadb", "x", ("t",), "custom"), "format plain"),
        (DumpRequest("postgresql", "x", ("t",), "tar"), "format plain or custom"),
        (DumpRequest("postgresql", "x", ()), "at least one --table"),
        (DumpRequest("postgresql", "-h", ("t",)), "database name"),
        (DumpRequest("postgresql", "host=evil", ("t",)), "database name"),
        (DumpRequest("postgresql", "pg", ("vic*",)), "table name"),
        (DumpRequest("postgresql", "pg", ("a;drop",)), "table name"),
        (DumpRequest("postgresql", "pg", ('"Quoted"',)), "table name"),
        (DumpRequest("postgresql", "pg", ("1st",)), "table name"),
        (DumpRequest("postgresql", "pg", ("a.b.c",)), "table name"),
        (DumpRequest("postgresql", "pg", ("x" * 64,)), "table name"),
        (DumpRequest("mariadb", "shop", ("db.orders",)), "table name"),
        (DumpRequest("mariadb", "shop", ("--all-databases",)), "table name"),
        (DumpRequest("postgresql", "pg", ("t", "t")), "twice"),
    ],
)
def test_bad_requests_are_usage_errors(request_: DumpRequest, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        check_request(request_)
    assert "\n" not in str(caught.value)


def test_pg_dump_gets_names_as_argv_items() -> None:
    request = DumpRequest("postgresql", "app", ("victim", "audit.log"), "custom")
    assert dump_argv(request, 5433, "/tmp/d/dump") == [
        "runuser", "-u", "postgres", "--", "pg_dump", "-p", "5433", "-d", "app",
        "--strict-names", "-t", "victim", "-t", "audit.log", "-F", "c", "-f", "/tmp/d/dump",
    ]  # fmt: skip
    assert dump_argv(PG, 5432, "/x")[-3:] == ["p", "-f", "/x"]


def test_mysqldump_argv_and_readiness() -> None:
    assert dump_argv(MARIA, 0, "/tmp/d/dump") == [
        "mysqldump", "--single-transaction", "--result-file=/tmp/d/dump", "shop", "orders", "lines",
    ]  # fmt: skip
    assert ready_argv("mariadb", 0) == ["mariadb", "-NBe", "select 1"]
    assert ready_argv("postgresql", 5433)[-4:] == ["pg_isready", "-q", "-p", "5433"]


def test_cluster_port() -> None:
    recorded = {"clusters": [{"port": 5433}, {"port": 5434}]}
    assert cluster_port(recorded) == 5433
    assert cluster_port(recorded, 5434) == 5434
    assert cluster_port({}) == 5432
    with pytest.raises(UsageError, match="clusters: 5433, 5434"):
        cluster_port(recorded, 5432)


def test_one_line() -> None:
    assert one_line("pg_dump: error: a\n\n  hint: b\r\n") == "pg_dump: error: a / hint: b"
    assert one_line("") == "no message"
    assert len(one_line("x" * 1000, 50)) == 50


# -- the restore point's applications ------------------------------------------------
def test_recorded_app_wants_a_thawed_writer() -> None:
    point = make_manifest(
        applications={
            "fsfreeze": {"state": "thawed"},
            "postgresql": {"state": "thawed", "clusters": [{"port": 5432}]},
            "mariadb": {"state": "failed"},
        },
        id="ab" * 32,
    )
    assert recorded_app(point, "postgresql")["clusters"] == [{"port": 5432}]
    with pytest.raises(UsageError, match=r"ended 'failed' \(applications held: fsfreeze, postg"):
        recorded_app(point, "mariadb")
    bare = make_manifest(applications={"fsfreeze": {"state": "thawed"}}, id="cd" * 32)
    with pytest.raises(UsageError, match=r"no postgresql writer ran \(applications held: fsf"):
        recorded_app(bare, "postgresql")


# -- the target file -----------------------------------------------------------------
def test_check_target(tmp_path: Path) -> None:
    check_target(tmp_path / "new.sql", force=False)
    (tmp_path / "old.sql").write_text("x")
    with pytest.raises(TargetError, match="exists; remove it or use --force"):
        check_target(tmp_path / "old.sql", force=False)
    check_target(tmp_path / "old.sql", force=True)
    with pytest.raises(TargetError, match="is a directory"):
        check_target(tmp_path, force=True)
    with pytest.raises(TargetError, match="is not a directory"):
        check_target(tmp_path / "no" / "such.sql", force=False)


def test_atomic_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "dump.sql"

    def fail_midway() -> None:
        with atomic_file(target, force=False) as out:
            out.write(b"half")
            raise LabError("copy failed")

    with pytest.raises(LabError):
        fail_midway()
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target, force=False) as out:
        out.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert target.stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_file_does_not_clobber_a_file_that_appeared(tmp_path: Path) -> None:
    target = tmp_path / "dump.sql"

    def race() -> None:
        with atomic_file(target, force=False) as out:
            out.write(b"mine")
            target.write_bytes(b"theirs")

    with pytest.raises(TargetError, match="appeared meanwhile"):
        race()
    assert target.read_bytes() == b"theirs"
    with atomic_file(target, force=True) as out:
        out.write(b"mine")
    assert target.read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["dump.sql"]


# -- the guest side ------------------------------------------------------------------
class FakeAgentFiles:
    """``guest-file-open/read/close`` over a dict, in pieces of at most ``piece`` bytes."""

    def __init__(self, files: dict[str, bytes], piece: int = 7) -> None:
        self.files, self.piece = files, piece
        self.open: dict[int, tuple[bytes, int]] = {}
        self.closed = 0

    def agent(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: int = 10
    ) -> Any:
        args = arguments or {}
        if command == "guest-file-open":
            if args["path"] not in self.files:
                raise LabError(f"guest-file-open: {args['path']}: No such file")
            self.open[len(self.open)] = (self.files[args["path"]], 0)
            return len(self.open) - 1
        if command == "guest-file-read":
            data, at = self.open[args["handle"]]
            piece = data[at : at + min(self.piece, args["count"])]
            self.open[args["handle"]] = (data, at + len(piece))
            eof = at + len(piece) >= len(data)
            return {"count": len(piece), "buf-b64": base64.b64encode(piece).decode(), "eof": eof}
        assert command == "guest-file-close"
        self.closed += 1
        return {}


def test_copy_out_streams_pieces(tmp_path: Path) -> None:
    data = os.urandom(100)
    files = FakeAgentFiles({"/tmp/d/dump": data})
    with (tmp_path / "f").open("wb") as out:
        copied = copy_out(files, "/tmp/d/dump", out, NullProgress())
    assert (tmp_path / "f").read_bytes() == data
    assert copied.size == 100
    assert copied.digest == hashlib.sha256(data).hexdigest()
    assert files.closed == 1
    with pytest.raises(LabError, match="cannot open /nope"), (tmp_path / "g").open("wb") as out:
        copy_out(files, "/nope", out, NullProgress())


def dump_guest(dump: bytes | None, tool_exit: int = 0, stderr: bytes = b"") -> FakeGuest:
    """A guest whose dump tool writes ``dump`` to the path it is given."""
    guest = FakeGuest()

    def mktemp(argv: Sequence[str]) -> GuestResult:
        return GuestResult(0, stdout=b"/tmp/surety-items.abc\n")

    def tool(argv: Sequence[str]) -> GuestResult:
        if argv[0] == "mktemp" or "mktemp" in argv:
            return mktemp(argv)
        if dump is not None and tool_exit == 0:
            guest.files["/tmp/surety-items.abc/dump"] = dump
        return GuestResult(tool_exit, stderr=stderr)

    def stat(argv: Sequence[str]) -> GuestResult:
        return GuestResult(0, stdout=str(len(guest.files[argv[-1]])).encode())

    def sha256sum(argv: Sequence[str]) -> GuestResult:
        digest = hashlib.sha256(guest.files[argv[-1]]).hexdigest()
        return GuestResult(0, stdout=f"{digest}  {argv[-1]}\n".encode())

    guest.handlers.update(
        runuser=tool, mysqldump=tool, mktemp=mktemp, stat=stat, sha256sum=sha256sum
    )
    guest.handlers["rm"] = lambda argv: GuestResult(0)
    return guest


def run_dump(guest: FakeGuest, target: Path, request: DumpRequest = PG, **kw: Any) -> Any:
    options = ItemsOptions("ab12", request, target, **kw)
    clock = items.Clock(0.0)
    files = FakeAgentFiles(guest.files)
    return items._dump_and_copy(guest, files, options, 5432, clock, NullProgress())


def test_dump_and_copy(tmp_path: Path) -> None:
    guest = dump_guest(b"COPY public.victim (id, v) FROM stdin;\n1\tx\n\\.\n")
    size, digest = run_dump(guest, tmp_path / "v.sql")
    assert (tmp_path / "v.sql").read_bytes().startswith(b"COPY public.victim")
    assert size == (tmp_path / "v.sql").stat().st_size
    assert digest == hashlib.sha256((tmp_path / "v.sql").read_bytes()).hexdigest()
    assert guest.commands[1][4:6] == ["pg_dump", "-p"]
    assert guest.commands[-1] == ["rm", "-rf", "--", "/tmp/surety-items.abc"]


def test_mariadb_dump_runs_mysqldump(tmp_path: Path) -> None:
    guest = dump_guest(b"-- MariaDB dump\n")
    run_dump(guest, tmp_path / "m.sql", MARIA)
    assert guest.commands[0] == ["mktemp", "-d", "/tmp/surety-items.XXXXXXXX"]
    assert guest.commands[1][0] == "mysqldump"


def test_missing_table_is_the_tools_message_on_one_line(tmp_path: Path) -> None:
    stderr = b'pg_dump: error: no matching tables were found for pattern "nosuch"\n'
    guest = dump_guest(None, tool_exit=1, stderr=stderr)
    with pytest.raises(LabError) as caught:
        run_dump(guest, tmp_path / "v.sql")
    assert str(caught.value) == (
        "pg_dump failed (exit 1): "
        'pg_dump: error: no matching tables were found for pattern "nosuch"'
    )
    assert list(tmp_path.iterdir()) == []
    assert guest.commands[-1][:2] == ["rm", "-rf"]


def test_a_dump_above_the_limit_is_refused(tmp_path: Path) -> None:
    guest = dump_guest(b"x" * 2000)
    with pytest.raises(LabError, match=r"the dump is 2\.0 KiB, above the limit of 1\.0 KiB"):
        run_dump(guest, tmp_path / "v.sql", max_bytes=1024)
    assert list(tmp_path.iterdir()) == []


def test_an_app_that_never_answers_times_out(tmp_path: Path) -> None:
    guest = FakeGuest()
    guest.handlers["runuser"] = lambda argv: GuestResult(2, stdout=b"no response\n")
    options = ItemsOptions("ab12", PG, tmp_path / "v.sql", timeout=0.2)
    clock = items.Clock(0.0)
    deadline = items.time.monotonic() + 0.2
    items.wait_for_agent(guest, deadline, options.timeout, clock)
    assert "boot" in clock.laps
    with pytest.raises(LabError, match=r"postgresql did not accept .* port 5432 within 0 s \(last"):
        items._wait(guest, deadline, options, 5432, clock)
    guest.reachable = False
    with pytest.raises(LabError, match=r"the guest agent of the restored VM did not answer within"):
        items.wait_for_agent(guest, items.time.monotonic() + 0.1, 0.1, clock)


# -- through click ---------------------------------------------------------------------
def invoke(*args: str | Path) -> Any:
    env = {"SURETY_REPOSITORY": "/nonexistent/repo", "SURETY_PASSPHRASE": "x"}
    return CliRunner().invoke(cli, ["items", *map(str, args)], env=env)


def test_cli_refuses_bad_names_before_opening_the_repository(tmp_path: Path) -> None:
    result = invoke(
        "postgresql", "ab12", "--db", "postgres", "--table", "x;y", "--to", tmp_path / "f"
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "not a table name surety accepts: 'x;y'" in result.stderr
    assert "Traceback" not in result.output


def test_cli_refuses_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep")
    args = ("mariadb", "ab12", "--db", "shop", "--table", "orders", "--to", tmp_path / "f")
    result = invoke(*args)
    assert result.exit_code == 11
    assert "exists; remove it or use --force" in result.stderr
    assert (tmp_path / "f").read_text() == "keep"
    assert invoke(*args, "--force").exit_code == 3  # got past the check: no repository there


# -- the use case refuses before any lab -----------------------------------------------
def test_a_point_without_the_app_is_refused_before_the_lab(repo: Any, tmp_path: Path) -> None:
    host = FakeHypervisor()
    host.inject("domain_names", AssertionError("no lab may start"))  # the lab's first call
    point = repo.commit(make_manifest(applications={"mariadb": {"state": "thawed"}}))
    options = ItemsOptions(point[:8], PG, tmp_path / "v.sql")
    with pytest.raises(UsageError, match=r"no postgresql writer ran \(applications held: mariadb"):
        items.extract_items(repo, options, NullProgress(), host=host)
    other = "0000" if point.startswith("ffff") else "ffff"
    with pytest.raises(RestorePointNotFound):
        items.extract_items(
            repo, ItemsOptions(other, PG, tmp_path / "v.sql"), NullProgress(), host=host
        )
    assert list(tmp_path.iterdir()) == []
    assert host.events == []
