"""Two real Samba AD DCs (LAB.TEST: DC1 + DC2) on this host, for stage-1 tests of ``samba-ad``.

Each DC is a private mount + UTS namespace (its own host name) whose Samba paths are
bind-mounted from a per-DC directory: ``/etc/samba``, ``/var/lib`` (so ``/var/lib/samba`` and
``/var/lib/surety``), ``/var/cache``, ``/var/log``, ``/run`` (``/run/samba``, the writer's
``/run/surety-*`` session, ``/run/surety-samba-ad``), ``/etc/krb5.conf``, ``/etc/hosts`` and
``/etc/resolv.conf``. The product's guest commands therefore run unchanged, as root, at the
standard paths; the host's own /etc/samba/smb.conf and /etc/krb5.conf are never read or written.

Both DCs share one private network namespace (no route out) holding a veth pair with
10.99.0.2 (dc1) and 10.99.0.3 (dc2): non-loopback addresses, so the join and
samba_dnsupdate register DNS as on a real network. One long-lived holder process per
namespace (``sleep infinity``); ``DcChannel`` runs argv through ``nsenter -t HOLDER -m -u -n``.

The only stand-in: there is no systemd in a DC's namespace, so ``DcChannel`` maps
``systemctl start samba-ad-dc[.service]`` to ``samba -D`` and waits until its LDAP server
answers (the unit is Type=notify: systemctl returns once samba is ready), ``systemctl stop``
to SIGTERM (then SIGKILL) of every process in the DC's mount namespace,
``systemctl is-active`` to "is such a process alive", and ``journalctl`` to the tail of
samba's log file.

DC1 is provisioned and DC2 joined once per pytest run (the xdist workers share it through a
file lock); each test gets a copy of that state (``cp -a`` while samba is stopped) in its own
namespaces, so tests that destroy a DC never re-provision and workers never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from surety.hypervisor.guest_agent import GuestResult
from surety.quiesce.writers.samba_ad import parse_ldif

__all__ = [
    "ADDR",
    "PASSWORD",
    "REALM",
    "Dc",
    "DcChannel",
    "Lab",
    "Net",
    "golden_state",
    "leftovers",
]

REALM, DOMAIN, BASE = "LAB.TEST", "LAB", "DC=lab,DC=test"
PASSWORD = "Passw0rd.Lab1"  # test only
ADDR = {"DC1": "10.99.0.2", "DC2": "10.99.0.3"}
ADMIN = f"Administrator%{PASSWORD}"
MOUNTS = (
    "etc-samba:/etc/samba",
    "var-lib:/var/lib",
    "var-cache:/var/cache",
    "var-log:/var/log",
    "krb5.conf:/etc/krb5.conf",
    "hosts:/etc/hosts",
    "resolv.conf:/etc/resolv.conf",
    "run:/run",
)
FILES = ("krb5.conf", "hosts", "resolv.conf")
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
HOSTS = "127.0.0.1 localhost\n" + "".join(
    f"{a} {n.lower()}.lab.test {n.lower()}\n" for n, a in ADDR.items()
)
RESOLV = "".join(f"nameserver {a}\n" for a in ADDR.values()) + "search lab.test\n"


def _sh(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)


def _ns_of(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def pids_in(kind: str, ns: str, but: int | None = None) -> list[int]:
    """Every process whose ``kind`` namespace is ``ns`` (``but`` excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != but and _ns_of(int(entry), kind) == ns:
            found.append(int(entry))
    return found


def _kill_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


CREATED: list[str] = []  # every network namespace this process made (for ``leftovers``)


def leftovers() -> list[int]:
    """Processes still alive in any lab network namespace this process made (should be none)."""
    return [pid for ns in CREATED for pid in pids_in("net", ns)]


class Net:
    """The private network namespace both DCs live in (a holder process keeps it)."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
        for _ in range(100):
            self.ns = _ns_of(self.holder.pid, "net")
            if self.ns and self.ns != _ns_of(os.getpid(), "net"):
                break
            time.sleep(0.02)
        if self.ns:
            CREATED.append(self.ns)
        script = (
            "ip link set lo up && ip link add sv1 type veth peer name sv2"
            f" && ip addr add {ADDR['DC1']}/24 dev sv1"
            f" && ip addr add {ADDR['DC2']}/24 dev sv2"
            " && ip link set sv1 up && ip link set sv2 up"
        )
        done = _sh(["nsenter", "-t", str(self.holder.pid), "-n", "sh", "-c", script])
        if done.returncode:
            self.close()
            raise RuntimeError(f"lab network: {done.stderr.decode()}")

    def close(self) -> None:
        if self.ns:
            _kill_all(pids_in("net", self.ns, but=self.holder.pid), signal.SIGKILL)
        self.holder.kill()
        self.holder.wait()


class Dc:
    """One DC: its state directory and the namespace holder that mounts it."""

    def __init__(self, name: str, root: Path, net: Net) -> None:
        self.name, self.root, self.net = name, root, net
        self.addr = ADDR[name]
        self.holder: subprocess.Popen[bytes] | None = None
        self.mntns: str | None = None

    # -- namespaces -----------------------------------------------------------
    def make_dirs(self) -> None:
        for spec in MOUNTS:
            src = self.root / spec.split(":")[0]
            if src.name in FILES:
                if not src.exists():
                    src.write_text("")
            else:
                src.mkdir(parents=True, exist_ok=True)
        (self.root / "hosts").write_text(HOSTS)
        (self.root / "resolv.conf").write_text(RESOLV)
        for sub in (
            "var-lib/samba/private",
            "var-lib/surety",
            "var-cache/samba",
            "run/samba",
            "var-log/samba",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def enter(self) -> None:
        """Start the holder: new mount + UTS namespace inside the lab network, paths mounted."""
        self.make_dirs()
        binds = " && ".join(
            f"mount --bind {self.root / s.split(':')[0]} {s.split(':')[1]}" for s in MOUNTS
        )
        script = f"hostname {self.name.lower()} && {binds} && echo ready && exec sleep infinity"
        self.holder = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(self.net.holder.pid),
                "-n",
                "--",
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read().decode() if self.holder.stderr else ""
            raise RuntimeError(f"{self.name}: namespace: {err}")
        self.mntns = _ns_of(self.holder.pid, "mnt")

    def leave(self) -> None:
        """Kill everything in the DC's namespace, then the holder: nothing stays mounted."""
        self.kill_samba()
        if self.holder is not None:
            self.holder.kill()
            self.holder.communicate()
            self.holder = None

    def procs(self) -> list[int]:
        if self.mntns is None or self.holder is None:
            return []
        return pids_in("mnt", self.mntns, but=self.holder.pid)

    # -- commands -------------------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        assert self.holder is not None, f"{self.name}: namespace not entered"
        env = [f"{k}={v}" for k, v in ENV.items()]
        return [
            "nsenter",
            "-t",
            str(self.holder.pid),
            "-m",
            "-u",
            "-n",
            "--wd=/",
            "--",
            "env",
            "-i",
            *env,
            *argv,
        ]

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 300
    ) -> GuestResult:
        try:
            done = subprocess.run(
                self.argv(argv), input=stdin, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            return GuestResult(124, exc.stdout or b"", (exc.stderr or b"") + b"timed out")
        return GuestResult(done.returncode, done.stdout, done.stderr)

    def must(self, argv: Sequence[str], timeout: float = 300) -> str:
        done = self.run(argv, timeout=timeout)
        assert done.ok, f"{self.name}: {' '.join(argv)}: {done.text()}"
        return done.stdout.decode(errors="replace")

    def sh(self, script: str, timeout: float = 300) -> GuestResult:
        return self.run(["sh", "-c", script], timeout=timeout)

    def ldb(self, *args: str, url: str | None = None) -> str:
        return self.must(["ldbsearch", "-H", url or f"ldap://{self.addr}", "-U", ADMIN, *args])

    def tool(self, *args: str, timeout: float = 300) -> GuestResult:
        return self.run(["samba-tool", *args, "-U", ADMIN], timeout=timeout)

    # -- samba ----------------------------------------------------------------
    def running(self) -> bool:
        return any(_comm(p) == "samba" for p in self.procs())

    def start_samba(self, timeout: float = 120) -> GuestResult:
        started = self.run(["samba", "-D"])
        if not started.ok:
            return started
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            up = self.run(
                ["ldbsearch", "-H", f"ldap://{self.addr}", "-s", "base", "-b", "", "dnsHostName"],
                timeout=10,
            )
            if up.ok and b"dnsHostName" in up.stdout:
                return GuestResult(0)
            time.sleep(0.3)
        return GuestResult(1, stderr=f"{self.name}: samba did not answer LDAP".encode())

    def kill_samba(self, sig: int = signal.SIGTERM, wait: float = 10) -> None:
        procs = self.procs()
        _kill_all(procs, sig)
        end = time.monotonic() + wait
        while self.procs() and time.monotonic() < end:
            time.sleep(0.1)
        _kill_all(self.procs(), signal.SIGKILL)
        end = time.monotonic() + 5
        while self.procs() and time.monotonic() < end:
            time.sleep(0.05)

    def crash(self) -> None:
        self.kill_samba(signal.SIGKILL)

    def signal_all(self, sig: int) -> None:
        _kill_all(self.procs(), sig)

    def snapshot(self, dest: Path) -> None:
        """Image of the running DC: every process stopped (SIGSTOP) during ``cp -a``."""
        self.signal_all(signal.SIGSTOP)
        try:
            _copy(self.root, dest)
        finally:
            self.signal_all(signal.SIGCONT)

    def replace_state(self, source: Path) -> None:
        """The DC's disk becomes ``source`` (samba must be stopped): namespace re-entered."""
        self.leave()
        shutil.rmtree(self.root)
        _copy(source, self.root)
        shutil.rmtree(self.root / "run", ignore_errors=True)  # /run does not survive a boot
        self.enter()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _copy(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = _sh(["cp", "-a", str(src), str(dest)])
    assert done.returncode == 0, done.stderr.decode()


class DcChannel:
    """The ``GuestChannel`` port over one lab DC (see the module docstring for systemctl)."""

    def __init__(self, dc: Dc) -> None:
        self.dc, self.name = dc, dc.name.lower()
        self.commands: list[list[str]] = []
        self.spawned: dict[int, subprocess.Popen[bytes]] = {}

    def ping(self, timeout: int = 5) -> None:
        assert self.dc.holder is not None

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 60.0
    ) -> GuestResult:
        argv = list(argv)
        self.commands.append(argv)
        if argv[0] == "systemctl":
            return self._systemctl(argv[1:])
        if argv[:2] == ["sh", "-c"] and argv[2].lstrip().startswith("journalctl"):
            return self.dc.sh("tail -n 8 /var/lib/samba/log.samba 2>/dev/null")
        return self.dc.run(argv, stdin=stdin, timeout=timeout)

    def _systemctl(self, args: list[str]) -> GuestResult:
        verb = next((a for a in args if not a.startswith("-")), "")
        if verb == "start":
            return GuestResult(0) if self.dc.running() else self.dc.start_samba()
        if verb == "stop":
            self.dc.kill_samba()
            return GuestResult(0)
        if verb == "is-active":
            return GuestResult(0 if self.dc.running() else 3)
        return GuestResult(1, stderr=f"lab: systemctl {verb} not mapped".encode())

    def spawn(self, argv: Sequence[str], stdin: bytes | None = None) -> int:
        self.commands.append(list(argv))
        proc = subprocess.Popen(
            self.dc.argv(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(stdin or b"")
        proc.stdin.close()
        proc.stdin = None
        self.spawned[proc.pid] = proc
        return proc.pid

    def poll(self, pid: int) -> GuestResult | None:
        proc = self.spawned[pid]
        if proc.poll() is None:
            return None
        out, err = proc.communicate()
        return GuestResult(proc.returncode, out, err)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def _host(self, path: str) -> Path:
        for spec in MOUNTS:
            src, target = spec.split(":")
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return self.dc.root / src / path[len(target) :].lstrip("/")
        raise AssertionError(f"lab: {path} is outside the DC's mounted paths")

    def write_file(self, path: str, data: bytes) -> None:
        self.commands.append(["write_file", path])
        done = self.dc.run(["sh", "-c", 'cat > "$0"', path], stdin=data)
        assert done.ok, done.text()

    def read_file(self, path: str) -> bytes | None:
        done = self.dc.run(["sh", "-c", '[ -e "$0" ] || exit 3; cat "$0"', path])
        return done.stdout if done.ok else None

    def freeze_filesystems(self, timeout: int) -> int:
        """The lab's stand-in for fsfreeze: every process of the DC stopped (SIGSTOP)."""
        self.dc.signal_all(signal.SIGSTOP)
        return 1

    def thaw_filesystems(self) -> int:
        self.dc.signal_all(signal.SIGCONT)
        return 1

    def close(self) -> None:
        for pid in list(self.spawned):
            self.kill(pid)
            self.spawned.pop(pid).communicate()


class CopyProvider:
    """A ``SnapshotProvider`` for the lab: ``begin`` copies the (frozen) DC's state to ``dest``."""

    def __init__(self, dc: Dc, dest: Path) -> None:
        self.dc, self.dest = dc, dest

    def begin(self) -> Path:
        _copy(self.dc.root, self.dest)
        return self.dest


class Lab:
    """Two DCs from the golden state, in a fresh network namespace."""

    def __init__(self, golden: Path, root: Path) -> None:
        self.net = Net()
        self.dcs = {}
        try:
            for name in ADDR:
                _copy(golden / name, root / name)
                self.dcs[name] = Dc(name, root / name, self.net)
        except BaseException:
            self.net.close()
            raise
        self.root = root

    def __getitem__(self, name: str) -> Dc:
        return self.dcs[name]

    def up(self) -> None:
        for dc in self.dcs.values():
            dc.enter()
        for dc in self.dcs.values():
            started = dc.start_samba()
            assert started.ok, started.text()

    def close(self) -> None:
        for dc in self.dcs.values():
            dc.leave()
        self.net.close()


def provision(root: Path) -> None:
    """DC1 provisioned, DC2 joined, DNS complete, both converged, both stopped, in ``root``."""
    net = Net()
    dc1, dc2 = Dc("DC1", root / "DC1", net), Dc("DC2", root / "DC2", net)
    try:
        opts = [
            "--option=bind interfaces only=yes",
            "--option=dns forwarder=127.0.0.9",
            "--option=log file=/var/lib/samba/log.%m",
        ]
        dc1.enter()
        dc1.must(
            [
                "samba-tool",
                "domain",
                "provision",
                f"--realm={REALM}",
                f"--domain={DOMAIN}",
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                f"--adminpass={PASSWORD}",
                "--host-name=dc1",
                f"--host-ip={dc1.addr}",
                f"--option=interfaces={dc1.addr}",
                *opts,
            ]
        )
        krb5 = (dc1.root / "var-lib/samba/private/krb5.conf").read_text()
        for dc in (dc1, dc2):
            dc.make_dirs()
            (dc.root / "krb5.conf").write_text(krb5)
        started = dc1.start_samba()
        assert started.ok, started.text()
        dc2.enter()
        dc2.must(
            [
                "samba-tool",
                "domain",
                "join",
                "lab.test",
                "DC",
                f"--server={dc1.addr}",
                "-U",
                ADMIN,
                "--dns-backend=SAMBA_INTERNAL",
                "--option=netbios name=DC2",
                f"--option=interfaces={dc2.addr}",
                *opts,
            ]
        )
        started = dc2.start_samba()
        assert started.ok, started.text()
        ensure_dns(dc1, dc2)
        for a, b in ((dc2, dc1), (dc1, dc2)):
            replicate(a, b)
        dc1.kill_samba()
        dc2.kill_samba()
    finally:
        dc1.leave()
        dc2.leave()
        net.close()
    for dc in (dc1, dc2):
        shutil.rmtree(dc.root / "run", ignore_errors=True)


def ntds_dn(name: str) -> str:
    return (
        f"CN=NTDS Settings,CN={name},CN=Servers,CN=Default-First-Site-Name,CN=Sites,"
        f"CN=Configuration,{BASE}"
    )


def ensure_dns(*dcs: Dc) -> None:
    """A and GUID CNAME of each DC on the first one (what a join may fail to register)."""
    first = dcs[0]
    for dc in dcs:
        guid = attr(first.ldb("-b", ntds_dn(dc.name), "-s", "base", "objectGUID"), "objectGUID")
        host = dc.name.lower()
        for zone, name, kind, data in (
            ("lab.test", host, "A", dc.addr),
            ("_msdcs.lab.test", guid, "CNAME", f"{host}.lab.test"),
        ):
            have = first.tool("dns", "query", first.addr, zone, name, kind)
            if not have.ok:
                first.tool("dns", "add", first.addr, zone, name, kind, data)


def replicate(dest: Dc, source: Dc, nc: str = BASE, tries: int = 8) -> GuestResult:
    """``samba-tool drs replicate DEST SOURCE NC``; retried while a just-started DC's DRS
    server is not ready yet (DsReplicaSync fails for a few seconds after samba starts)."""
    for _ in range(tries):
        done = dest.tool("drs", "replicate", dest.name, source.name, nc, timeout=120)
        if done.ok:
            break
        time.sleep(1.5)
    return done


def attr(ldif: str, name: str) -> str:
    for record in parse_ldif(ldif):
        if record.get(name):
            return record[name][0]
    return ""


@contextlib.contextmanager
def golden_state(shared: Path) -> Iterator[Path]:
    """The provisioned pair, made once per pytest run (xdist workers share ``shared``)."""
    shared.mkdir(parents=True, exist_ok=True)
    golden = shared / "golden"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (golden / "done").exists():
            shutil.rmtree(golden, ignore_errors=True)
            golden.mkdir()
            provision(golden)
            (golden / "done").write_text("")
        fcntl.flock(lock, fcntl.LOCK_UN)
    yield golden
