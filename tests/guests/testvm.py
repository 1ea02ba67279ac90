"""Define, boot, run commands in, and remove libvirt test VMs.

Command line (through the ``scripts/testvm`` wrapper)::

    scripts/testvm up NAME [--app postgresql|mariadb|samba-ad|none] [--memory MiB]
                           [--vcpus N] [--disk-size 4G] [--net] [--timeout S]
    scripts/testvm exec NAME [--stdin FILE] [--timeout S] -- CMD...
    scripts/testvm down NAME
    scripts/testvm list

Each VM boots the cached Debian guest from ``tests/guests/build.sh`` (built on
first use) by direct kernel boot on ``qemu:///system``. Its disk is a qcow2
overlay on the cached image, kept with the serial console log in
``${SURETY_TESTVM_DIR:-/var/lib/surety/testvm}/NAME/``. QEMU runs as the
libvirt default user (libvirt-qemu on Debian): every directory on the way is
world-searchable and the cached image is hard-linked (or copied) below
``SURETY_TESTVM_DIR/.images/`` because ``~/.cache`` is usually private.

The accelerator is chosen once per host kernel and guest by a short KVM smoke
boot and cached in ``SURETY_TESTVM_DIR/.accel.json``; without working KVM the
guest runs under TCG (``-cpu max``). ``SURETY_TESTVM_ACCEL=kvm|tcg`` forces it.

``NAME/backup/`` belongs to the QEMU user: QEMU must be able to create the
NBD socket and scratch files of ``virsh backup-begin`` (pull mode) there.

The databases are installed in the image but disabled. ``--app X`` adds
``systemd.wants=X.service`` to the kernel command line (X starts during boot),
enables X in the guest through the agent (so it also starts in a restored copy
of the disk) and waits until X accepts connections.

``--app samba-ad`` boots the Samba AD DC image instead (``tests/guests/build_ad.sh``,
an overlay on the base image; both are staged) and starts nothing: a DC must be
provisioned or joined first (``tests/guests/ad.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt

from tests.guests import agent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD_SH = HERE / "build.sh"
BUILD_AD_SH = HERE / "build_ad.sh"
LIBVIRTD_UP = REPO / "scripts" / "libvirtd-up"
VM_ROOT = Path(os.environ.get("SURETY_TESTVM_DIR", "/var/lib/surety/testvm"))
URI = os.environ.get("SURETY_LIBVIRT_URI", agent.DEFAULT_URI)
METADATA_NS = "urn:surety:testvm"
IMAGE_FILES = ("root.qcow2", "vmlinuz", "initrd.img", "guest.json")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
KVM_SMOKE_TIMEOUT = 20.0
AGENT_FAILURE_EXIT = 125
"""Exit code of ``testvm exec`` when the agent (not the command) failed."""


@dataclass(frozen=True)
class App:
    """A database service in the guest and how to tell it accepts connections.

    ``build`` makes the image the app runs on; ``start`` False: ``up`` only
    boots that image (the service needs setting up first).
    """

    service: str
    ready: tuple[str, ...]
    build: Path = BUILD_SH
    start: bool = True


APPS = {
    "postgresql": App("postgresql.service", ("pg_isready", "-q")),
    "mariadb": App("mariadb.service", ("mariadb-admin", "--silent", "ping")),
    "samba-ad": App("samba-ad-dc.service", (), build=BUILD_AD_SH, start=False),
}


@dataclass(frozen=True)
class Nic:
    """A virtio NIC on an existing libvirt network, with a fixed MAC address."""

    network: str
    mac: str


@dataclass(frozen=True)
class GuestImage:
    """A built guest staged where QEMU (libvirt-qemu) can read it."""

    dir: Path
    key: str
    cmdline: str
    base_key: str = ""
    """For a layered image (the AD guest): the key of the base image below it."""

    @property
    def root(self) -> Path:
        return self.dir / "root.qcow2"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"


@dataclass(frozen=True)
class VmInfo:
    """What ``up`` reports (also printed as JSON on stdout)."""

    name: str
    dir: str
    console: str
    backup_dir: str
    accel: str
    app: str
    boot_seconds: float
    app_seconds: float
    total_seconds: float


class VmError(Exception):
    """A test VM could not be created, reached or removed."""


def log(message: str) -> None:
    """Progress message on stderr."""
    print(f"testvm: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# host preparation


def ensure_libvirtd() -> None:
    """Start libvirtd/virtlogd if needed (scripts/libvirtd-up is idempotent)."""
    subprocess.run([str(LIBVIRTD_UP)], check=True)


def build_guest(script: Path = BUILD_SH) -> Path:
    """Build or reuse the cached guest; return its cache directory."""
    proc = subprocess.run([str(script)], check=True, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise VmError(f"{script.name} printed no guest directory")
    return Path(lines[-1])


def make_public_dir(path: Path) -> None:
    """Create ``path`` and missing parents as 0755 (searchable by the QEMU user).

    Directories that already existed above ``path`` are left alone.
    """
    missing = [part for part in (path, *path.parents) if not part.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for part in [path, *missing]:
        part.chmod(0o755)


def qemu_user_group(conf: Path = QEMU_CONF) -> tuple[int, int]:
    """uid and gid QEMU runs as under qemu:///system (``user``/``group`` in qemu.conf).

    Debian's built-in default is libvirt-qemu:libvirt-qemu; "+N" means a
    numeric id.
    """
    names = {"user": "libvirt-qemu", "group": "libvirt-qemu"}
    with contextlib.suppress(OSError):
        for line in conf.read_text().splitlines():
            match = re.match(r'\s*(user|group)\s*=\s*"([^"]+)"', line)
            if match:
                names[match.group(1)] = match.group(2)
    user, group = names["user"], names["group"]
    uid = int(user[1:]) if user.startswith("+") else pwd.getpwnam(user).pw_uid
    gid = int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid
    return uid, gid


def make_qemu_dir(path: Path) -> Path:
    """Directory QEMU itself can create files in (NBD sockets, backup scratch).

    Owned by the QEMU user, mode 0750; root (the backup tool) can still use it.
    """
    make_public_dir(path.parent)
    path.mkdir(exist_ok=True)
    uid, gid = qemu_user_group()
    os.chown(path, uid, gid)
    path.chmod(0o750)
    return path


def stage_image(cache_dir: Path) -> GuestImage:
    """Hard-link (or copy) the cached guest to ``VM_ROOT/.images/<key>``.

    A layered image (``base_key`` in guest.json: its root.qcow2 is backed by
    ``../<base_key>/root.qcow2``) stages its base beside it first.
    """
    meta = json.loads((cache_dir / "guest.json").read_text())
    if meta.get("base_key"):
        stage_image(cache_dir.parent / meta["base_key"])
    images = VM_ROOT / ".images"
    dest = images / meta["key"]
    if not (dest / "guest.json").exists():
        make_public_dir(images)
        tmp = Path(tempfile.mkdtemp(prefix=f".{meta['key']}-", dir=images))
        for name in IMAGE_FILES:
            link_or_copy(cache_dir / name, tmp / name)
        tmp.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another `up` staged it first
            shutil.rmtree(tmp)
    return GuestImage(
        dir=dest, key=meta["key"], cmdline=meta["cmdline"], base_key=meta.get("base_key", "")
    )


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst, copying when they are on different filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    dst.chmod(0o644)


# --------------------------------------------------------------------------
# accelerator


def choose_accel(image: GuestImage, conn: libvirt.virConnect) -> str:
    """Return "kvm" or "tcg": forced by env, cached, or decided by a smoke boot."""
    forced = os.environ.get("SURETY_TESTVM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    cache = VM_ROOT / ".accel.json"
    # A layered image has the base's kernel: it shares the base's decision.
    fingerprint = {"host_kernel": os.uname().release, "guest_key": image.base_key or image.key}
    try:
        cached = json.loads(cache.read_text())
        if {k: cached.get(k) for k in fingerprint} == fingerprint:
            return str(cached["accel"])
    except (OSError, ValueError, KeyError):
        pass
    start = time.monotonic()
    works = libvirt_offers_kvm(conn) and kvm_smoke_boot(image)
    accel = "kvm" if works else "tcg"
    log(
        f"KVM smoke boot {'passed' if works else 'failed'} in "
        f"{time.monotonic() - start:.1f}s: using {accel}"
    )
    write_atomic(cache, json.dumps({**fingerprint, "accel": accel}) + "\n")
    return accel


def libvirt_offers_kvm(conn: libvirt.virConnect) -> bool:
    """True when libvirt reports a usable kvm domain type."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
    except libvirt.libvirtError:
        return False
    return True


def kvm_smoke_boot(image: GuestImage, timeout: float = KVM_SMOKE_TIMEOUT) -> bool:
    """Boot the guest under KVM with ``init=/bin/true`` and no reboot.

    A working KVM reaches the real root, /bin/true exits, the kernel panics and
    QEMU quits by itself within seconds. A broken nested KVM hangs or stops
    with an emulation failure, leaving QEMU alive and paused: it is killed at
    the timeout and counts as failure (so does anything inconclusive).
    """
    with tempfile.TemporaryDirectory(prefix="surety-kvm-smoke-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = [
            "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-machine", "q35",
            "-m", "512", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{serial}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", "root=/dev/vda ro console=ttyS0 panic=-1 init=/bin/true",
            "-drive", f"file={image.root},if=virtio,format=qcow2,snapshot=on",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        output = serial.read_text(errors="replace") if serial.exists() else ""
        return "Attempted to kill init" in output


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------
# domain definition


def parse_size(text: str) -> int:
    """Parse a qemu-img style size ("4G", "512M", "4294967296") into bytes."""
    match = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise VmError(f"bad size {text!r} (expected e.g. 4G, 512M)")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(match.group(1)) << (10 * power)


def disk_serial(name: str) -> str:
    """Stable virtio-blk serial for a VM (virtio-blk keeps at most 20 bytes)."""
    return "surety-" + hashlib.sha256(name.encode()).hexdigest()[:13]


def attr(value: str) -> str:
    """Escape a value for a single-quoted XML attribute."""
    return escape(value, {"'": "&apos;", '"': "&quot;"})


def kernel_cmdline(image: GuestImage, app: str) -> str:
    """The image's kernel command line; with an app, systemd starts it at boot.

    ``systemd.wants=`` lets the database start in parallel with the rest of
    the boot instead of after the agent answers.
    """
    if app in APPS and APPS[app].start:
        return f"{image.cmdline} systemd.wants={APPS[app].service}"
    return image.cmdline


def domain_xml(
    name: str,
    image: GuestImage,
    *,
    vm_dir: Path,
    accel: str,
    app: str,
    memory_mib: int,
    vcpus: int,
    net: bool,
    nics: Sequence[Nic] = (),
) -> str:
    """libvirt XML for a test VM (direct kernel boot, virtio disk, agent channel).

    ``net`` adds a user-mode NIC; each of ``nics`` a virtio NIC on a libvirt network.
    """
    domain_type, cpu = {
        "kvm": ("kvm", "<cpu mode='host-passthrough' check='none' migratable='off'/>"),
        "tcg": ("qemu", "<cpu mode='maximum' check='none'/>"),
    }[accel]
    interface = "<interface type='user'><model type='virtio'/></interface>" if net else ""
    interface += "".join(
        f"<interface type='network'><source network='{attr(nic.network)}'/>"
        f"<mac address='{attr(nic.mac)}'/><model type='virtio'/></interface>"
        for nic in nics
    )
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>
  <metadata>
    <testvm:vm xmlns:testvm='{METADATA_NS}'>
      <testvm:app>{escape(app)}</testvm:app>
      <testvm:guest-key>{escape(image.key)}</testvm:guest-key>
      <testvm:dir>{escape(str(vm_dir))}</testvm:dir>
    </testvm:vm>
  </metadata>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(kernel_cmdline(image, app))}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{attr(str(vm_dir / "vda.qcow2"))}'/>
      <target dev='vda' bus='virtio'/>
      <serial>{disk_serial(name)}</serial>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'>
      <source path='{attr(str(vm_dir / "console.log"))}'/>
      <target port='0'/>
    </serial>
    {interface}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def create_overlay(image: GuestImage, path: Path, size: str) -> None:
    """qcow2 overlay backed by the cached image, with at least the image's size."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(image.root), str(path), size],
        check=True,
    )  # fmt: skip
    path.chmod(0o644)


def image_virtual_size(path: Path) -> int:
    """Virtual size in bytes of a disk image."""
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    return int(json.loads(out)["virtual-size"])


# --------------------------------------------------------------------------
# up / exec / down / list


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    """The domain called name, or None."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def console_tail(vm_dir: Path, lines: int = 40) -> str:
    """Last lines of the VM's serial console log (for error messages)."""
    try:
        text = (vm_dir / "console.log").read_text(errors="replace")
    except OSError as exc:
        return f"(no console log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(console.log is empty)"


def validate_name(name: str) -> None:
    """Domain names double as directory names: keep them simple."""
    if not NAME_RE.match(name):
        raise VmError(f"bad VM name {name!r} (letters, digits, '_', '.', '-')")


def up(
    name: str,
    *,
    app: str = "none",
    memory_mib: int = 1024,
    vcpus: int = 2,
    disk_size: str = "4G",
    net: bool = False,
    timeout: float = 180.0,
    nics: Sequence[Nic] = (),
) -> VmInfo:
    """Define and start VM ``name``; return once its agent (and app) answer.

    On failure the domain is destroyed but stays defined with its directory
    (console.log) for inspection; ``down`` removes it.
    """
    validate_name(name)
    if app != "none" and app not in APPS:
        raise VmError(f"unknown app {app!r} (choose from none, {', '.join(APPS)})")
    prepare_start = time.monotonic()
    ensure_libvirtd()
    conn = agent.connect(URI)
    if lookup(conn, name) is not None:
        raise VmError(f"domain {name} already exists; run `scripts/testvm down {name}` first")
    image = stage_image(build_guest(APPS[app].build if app in APPS else BUILD_SH))
    accel = choose_accel(image, conn)
    vm_dir = VM_ROOT / name
    grow = prepare_vm_dir(vm_dir, image, disk_size)
    xml = domain_xml(
        name, image, vm_dir=vm_dir, accel=accel, app=app, memory_mib=memory_mib,
        vcpus=vcpus, net=net, nics=nics,
    )  # fmt: skip
    (vm_dir / "domain.xml").write_text(xml)
    dom = conn.defineXML(xml)
    log(f"prepared {name} in {time.monotonic() - prepare_start:.1f}s")
    start = time.monotonic()
    dom.create()
    log(f"started {name} ({accel}, {memory_mib} MiB, {vcpus} vCPUs); waiting for the agent")
    try:
        boot = wait_for_boot(dom, timeout)
        log(f"{name}: guest agent answered after {boot:.1f}s")
        if grow:
            agent.guest_exec(dom, ["resize2fs", "/dev/vda"], timeout=120).check()
        app_seconds = start_app(dom, app, timeout - (time.monotonic() - start))
    except (agent.AgentError, libvirt.libvirtError) as exc:
        stop_quietly(dom)
        raise VmError(
            f"{name} did not come up: {exc}\n--- last lines of {vm_dir / 'console.log'} ---\n"
            f"{console_tail(vm_dir)}\n--- run `scripts/testvm down {name}` to clean up ---"
        ) from exc
    return VmInfo(
        name=name, dir=str(vm_dir), console=str(vm_dir / "console.log"),
        backup_dir=str(vm_dir / "backup"), accel=accel,
        app=app, boot_seconds=round(boot, 1), app_seconds=round(app_seconds, 1),
        total_seconds=round(time.monotonic() - start, 1),
    )  # fmt: skip


def wait_for_boot(dom: libvirt.virDomain, timeout: float) -> float:
    """``agent.wait_for_agent``, and once more if QEMU crashed while the guest booted.

    CI met QEMU 7.2's TCG crashing a second into a boot (a vCPU thread's segfault,
    libvirt: ``shutting down, reason=crashed``): that is the emulator, not the guest
    nor surety, so the domain is started again (its disk is only a second into the
    boot). Any other failure is raised as it was."""
    try:
        return agent.wait_for_agent(dom, timeout=timeout)
    except agent.AgentError:
        if tuple(dom.state()) != (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED):
            raise
    log(f"{dom.name()}: QEMU crashed while the guest booted; starting it once more")
    dom.create()
    return agent.wait_for_agent(dom, timeout=timeout)


def prepare_vm_dir(vm_dir: Path, image: GuestImage, disk_size: str) -> bool:
    """Fresh VM directory with the disk overlay; True if the fs must grow."""
    if vm_dir.exists():
        shutil.rmtree(vm_dir)  # left over from a domain that no longer exists
    make_public_dir(vm_dir)
    base_size = image_virtual_size(image.root)
    wanted_size = parse_size(disk_size)
    if wanted_size < base_size:
        raise VmError(f"--disk-size {disk_size} is smaller than the image ({base_size} bytes)")
    create_overlay(image, vm_dir / "vda.qcow2", str(wanted_size))
    make_qemu_dir(vm_dir / "backup")
    return wanted_size > base_size


def start_app(dom: libvirt.virDomain, app: str, timeout: float) -> float:
    """Enable and start the app's service, wait until it is ready; seconds taken."""
    if app == "none" or not APPS[app].start:
        return 0.0
    spec = APPS[app]
    start = time.monotonic()
    # Plain `systemctl enable` also syncs the SysV script (perl) and reloads
    # systemd: ~14 s under TCG. Enabling without both keeps it for the next
    # boot (or a restored copy of the disk); `start` covers this boot.
    enable = f"SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload {spec.service}"
    script = f"{enable} && systemctl start {spec.service}"
    agent.guest_exec(dom, ["sh", "-c", script], timeout=timeout).check()
    agent.wait_for_command(dom, spec.ready, timeout=max(1.0, timeout - (time.monotonic() - start)))
    seconds = time.monotonic() - start
    log(f"{dom.name()}: {app} ready after {seconds:.1f}s")
    return seconds


def stop_quietly(dom: libvirt.virDomain) -> None:
    """Destroy a domain, ignoring "not running"."""
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()


def exec_command(
    name: str, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 300.0
) -> agent.ExecResult:
    """Run argv in VM ``name`` through the guest agent."""
    conn = agent.connect(URI)
    dom = lookup(conn, name)
    if dom is None:
        raise VmError(f"no domain {name}")
    agent.wait_for_agent(dom, timeout=60)
    return agent.guest_exec(dom, argv, stdin=stdin, timeout=timeout)


UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)


def down(name: str) -> bool:
    """Destroy and undefine VM ``name`` and remove its directory.

    Idempotent: returns False when there was nothing to remove.
    """
    validate_name(name)
    removed = False
    ensure_libvirtd()
    conn = agent.connect(URI)
    dom = lookup(conn, name)
    if dom is not None:
        if dom.isActive():
            stop_quietly(dom)
        with contextlib.suppress(libvirt.libvirtError):  # a transient one is gone once stopped
            if dom.isPersistent():
                dom.undefineFlags(UNDEFINE_FLAGS)
        removed = True
    vm_dir = VM_ROOT / name
    if vm_dir.exists():
        shutil.rmtree(vm_dir)
        removed = True
    return removed


def list_vms() -> list[dict[str, str]]:
    """Test VMs known to libvirt (by our metadata) plus leftover directories."""
    ensure_libvirtd()
    conn = agent.connect(URI)
    rows: dict[str, dict[str, str]] = {}
    for dom in conn.listAllDomains():
        try:
            meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        except libvirt.libvirtError:
            continue
        app = re.search(r"<testvm:app>([^<]*)<", meta) or re.search(r"<app>([^<]*)<", meta)
        rows[dom.name()] = {
            "name": dom.name(),
            "state": "running" if dom.isActive() else "shut off",
            "app": app.group(1) if app else "?",
        }
    if VM_ROOT.is_dir():
        for path in sorted(VM_ROOT.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and path.name not in rows:
                rows[path.name] = {"name": path.name, "state": "no domain", "app": "-"}
    return sorted(rows.values(), key=lambda row: row["name"])


# --------------------------------------------------------------------------
# command line


def parser() -> argparse.ArgumentParser:
    """Argument parser for the four subcommands."""
    top = argparse.ArgumentParser(prog="scripts/testvm", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)

    p_up = sub.add_parser("up", help="define and boot a test VM")
    p_up.add_argument("name")
    p_up.add_argument("--app", choices=["none", *APPS], default="none")
    p_up.add_argument("--memory", type=int, default=1024, metavar="MiB")
    p_up.add_argument("--vcpus", type=int, default=2)
    p_up.add_argument("--disk-size", default="4G")
    p_up.add_argument("--net", action="store_true", help="add a user-mode (slirp) virtio NIC")
    p_up.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")

    p_exec = sub.add_parser("exec", help="run a command in the guest via the agent")
    p_exec.add_argument("name")
    p_exec.add_argument("--stdin", metavar="FILE", help="file to feed on stdin ('-' = ours)")
    p_exec.add_argument("--timeout", type=float, default=300.0)
    p_exec.add_argument("argv", nargs="+", metavar="CMD")

    p_down = sub.add_parser("down", help="destroy, undefine and delete a test VM")
    p_down.add_argument("name")

    sub.add_parser("list", help="list test VMs")
    return top


def read_stdin_arg(value: str | None) -> bytes | None:
    """Bytes for ``--stdin``: a file, '-' for our stdin, or None."""
    if value is None:
        return None
    if value == "-":
        return sys.stdin.buffer.read()
    return Path(value).read_bytes()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/testvm; returns the process exit code."""
    args = parser().parse_args(argv)
    try:
        if args.command == "up":
            info = up(
                args.name, app=args.app, memory_mib=args.memory, vcpus=args.vcpus,
                disk_size=args.disk_size, net=args.net, timeout=args.timeout,
            )  # fmt: skip
            print(json.dumps(asdict(info)))
            return 0
        if args.command == "exec":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            result = exec_command(
                args.name, command, stdin=read_stdin_arg(args.stdin), timeout=args.timeout
            )
            sys.stdout.buffer.write(result.stdout)
            sys.stdout.flush()
            sys.stderr.buffer.write(result.stderr)
            sys.stderr.flush()
            return result.exitcode
        if args.command == "down":
            log(f"removed {args.name}" if down(args.name) else f"{args.name}: nothing to remove")
            return 0
        for row in list_vms():
            print(f"{row['name']:<24} {row['state']:<10} app={row['app']}")
        return 0
    except (VmError, agent.AgentError, libvirt.libvirtError) as exc:
        log(f"error: {exc}")
        return AGENT_FAILURE_EXIT if args.command == "exec" else 1
    except subprocess.CalledProcessError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
