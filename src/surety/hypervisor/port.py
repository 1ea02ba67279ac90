"""The hypervisor port: what the use cases call on a host and on one of its VMs.

Two protocols, ``HypervisorHost`` (one connection to a hypervisor) and
``HypervisorDomain`` (one VM on it), the latter made of three small facets a
helper can ask for alone: ``GuestAgent`` (the qemu-guest-agent and file-system
freeze), ``BackupSource`` (checkpoints, the pull-mode backup job, QMP) and
``BlockCopier`` (block copy jobs). The adapter is ``libvirt_host.LibvirtHost``;
the in-memory twin is ``surety.testing.fake_hypervisor.FakeHypervisor``; both
pass ``surety.testing.hypervisor_contract``. Only the wiring (``surety.app``)
opens a host; use cases receive one.

Errors (``surety.core.errors``), for every method unless it says otherwise:

* ``SourceError`` - reading or looking up failed (the connection is gone, no VM
  of that name in ``domain``), and every checkpoint, backup-job and QMP failure;
* ``TargetError`` - changing the host failed: define, create, start, stop,
  undefine, networks, block copy;
* ``GuestAgentError`` (a ``SourceError``) - the guest agent is absent, did not
  answer in time, or refused the command.

Messages are one line and name the VM. Nothing is retried: every method makes
one attempt and either did what it says or raised.

Vocabulary: a domain is *running* from the moment its QEMU process exists
(CPUs paused included) until it stops; *paused* while it runs with its CPUs
stopped (no guest code runs); *persistent* when it has a definition that
outlives a stop, *transient* when it vanishes from the host as it stops.

Tags are an admin's labels on a VM (policies select VMs by tag), kept in the
domain's own metadata in surety's namespace ``TAGS_NS``::

    <metadata>
      <surety:tags xmlns:surety="https://surety.dev/xmlns/tags/1">
        <tag>nightly</tag>
      </surety:tags>
    </metadata>
"""

from __future__ import annotations

from typing import Any, Protocol

from surety.core.errors import SourceError

__all__ = [
    "SHUTOFF_REASONS",
    "TAGS_NS",
    "BackupSource",
    "BlockCopier",
    "GuestAgent",
    "GuestAgentError",
    "HypervisorDomain",
    "HypervisorHost",
]


TAGS_NS = "https://surety.dev/xmlns/tags/1"

# why a VM is shut off, as libvirt says (virDomainShutoffReason); "unknown" is
# also what libvirt reports for every stopped VM after libvirtd restarted
SHUTOFF_REASONS = (
    "unknown",
    "shutdown",
    "destroyed",
    "crashed",
    "migrated",
    "saved",
    "failed",
    "from-snapshot",
    "daemon",
)


class GuestAgentError(SourceError):
    """The guest agent is absent, not answering, or refused the command."""


class GuestAgent(Protocol):
    """A VM's qemu-guest-agent, as the guest channel and the freeze use it."""

    @property
    def name(self) -> str:
        """The VM's name (for messages)."""
        ...

    def agent(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: int = 10
    ) -> Any:
        """Run one agent command (``guest-ping``, ``guest-exec``, ``guest-file-*``, ...)
        and return its ``return`` member (``{}`` for ``guest-ping``).

        Blocks up to ``timeout`` seconds. ``GuestAgentError`` when the agent is not
        there or not answering, the VM does not run, or the agent refuses the
        command (unknown command, bad arguments, refused while frozen). The call
        reaches the guest at most once; a timed-out command may still run there.
        """
        ...

    def fs_freeze(self, timeout: int) -> int:
        """Freeze every guest file system (the guest's fsfreeze hooks run first);
        the number frozen.

        Blocks up to ``timeout`` seconds for the agent. ``GuestAgentError`` if the
        freeze fails or is refused (e.g. already frozen): the guest may then be
        partly frozen, so callers thaw in ``finally`` whatever happened. While
        frozen the agent refuses everything but ping, freeze status and thaw.
        """
        ...

    def fs_thaw(self) -> int:
        """Thaw every guest file system; the number thawed.

        Idempotent: thawing a guest that is not frozen returns 0. ``GuestAgentError``
        when the agent does not answer (the guest stays as it was).
        """
        ...


class BackupSource(Protocol):
    """Checkpoints (changed-block tracking) and the pull-mode backup job of a VM."""

    def checkpoint_names(self) -> list[str]:
        """Names of the VM's checkpoints, in no particular order (running or not)."""
        ...

    def delete_checkpoint(self, name: str) -> None:
        """Delete checkpoint ``name``; its changes merge into its parent's dirty
        bitmap. ``SourceError`` if there is no such checkpoint (nothing changes)."""
        ...

    def backup_begin(self, backup_xml: str, checkpoint_xml: str | None) -> None:
        """Start a backup job (``<domainbackup mode='pull'>``: the disks' point in time
        served over NBD) and, with ``checkpoint_xml``, a new checkpoint in the same
        instant. Returns once the point in time is fixed (milliseconds).

        ``SourceError`` - and no job, no checkpoint - when the VM does not run, a
        backup job is already running, the incremental's checkpoint does not
        exist, or the new checkpoint's name is taken. The caller ends the job with
        ``abort_job`` (always: the job holds the exports and scratch files).
        """
        ...

    def has_job(self) -> bool:
        """A backup job is running on the VM (block jobs are not counted)."""
        ...

    def abort_job(self) -> None:
        """End the running backup job (its NBD exports and scratch files go; the
        checkpoint it made stays). ``SourceError`` when there is none. The job may
        take a moment to disappear from ``has_job`` after this returns."""
        ...

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """One QMP command for what the hypervisor API does not expose (dirty-bitmap
        state: ``query-named-block-nodes``); its ``return`` member. ``SourceError``
        when the VM does not run or QEMU refuses."""
        ...


class BlockCopier(Protocol):
    """Block copy jobs: move a running VM's disk to a new file."""

    def block_copy(self, disk: str, destination_xml: str) -> None:
        """Start copying ``disk`` (target name, e.g. ``vda``) with its whole backing
        chain flattened into the file ``destination_xml`` (a ``<disk>``) describes;
        the hypervisor creates that file. Guest writes go to both (synchronously
        where offered), so the copy converges under load. Returns at once.

        ``TargetError`` when the VM does not run, has no such disk, or the disk has
        a block job already.
        """
        ...

    def block_job(self, disk: str) -> tuple[int, int] | None:
        """``(cur, end)`` of the block job on ``disk``, ``None`` when there is none.

        The copy is ready to pivot once the live XML shows ``<mirror ready='yes'>``
        on the disk (``cur == end`` alone does not say it).
        """
        ...

    def block_job_abort(self, disk: str, pivot: bool = False) -> None:
        """End the block job on ``disk``. Without ``pivot`` the VM stays on its disk
        and the copy is abandoned (a job may take a moment to disappear from
        ``block_job``); with ``pivot`` the disk switches to the copy, synchronously:
        when this returns, the live XML names the copy.

        ``TargetError`` when there is no job on ``disk``, or ``pivot`` is asked
        before the copy is ready (the job then goes on).
        """
        ...


class HypervisorDomain(GuestAgent, BackupSource, BlockCopier, Protocol):
    """One VM: identity, XML, lifecycle, plus the three facets above.

    A handle stays valid while the VM exists; after a transient VM stopped (or a
    VM was undefined while stopped) its methods raise ``SourceError`` or
    ``TargetError``.
    """

    def uuid(self) -> str:
        """The VM's UUID, lower case with dashes."""
        ...

    def xml(self, inactive: bool = False) -> str:
        """The domain XML: the live one while the VM runs (running disk sources,
        block-copy ``<mirror>`` elements), the definition otherwise; ``inactive``:
        the definition the next start uses (the live XML of a transient VM, which
        has no other). Includes secure parts (passwords). Always has ``<name>``
        and ``<uuid>``."""
        ...

    def is_running(self) -> bool:
        """Its QEMU process exists (paused CPUs count as running)."""
        ...

    def is_persistent(self) -> bool:
        """It is defined (kept when it stops), not transient."""
        ...

    def is_paused(self) -> bool:
        """It runs with its CPUs paused (started paused, or paused since): no guest
        code runs. ``False`` when it does not run."""
        ...

    def shutoff_reason(self) -> str | None:
        """Why it is shut off, one of ``SHUTOFF_REASONS`` (``shutdown``: the guest
        shut itself down cleanly; ``destroyed``: powered off from the host;
        ``crashed``, ``failed``; ``unknown``: never started since it was defined,
        or libvirtd restarted since it stopped: libvirt keeps the reason in
        memory only). ``None`` while it runs (paused included)."""
        ...

    def tags(self) -> tuple[str, ...]:
        """The admin's tags on the VM (``TAGS_NS`` metadata; the running VM's while
        it runs, else the definition's), in their order; ``()`` without any."""
        ...

    def set_tags(self, tags: tuple[str, ...]) -> None:
        """Replace the VM's tags (the definition's, and the running VM's while it
        runs); ``()`` removes the metadata element. ``TargetError`` when refused."""
        ...

    def start(self, paused: bool = False) -> None:
        """Start the defined VM from its definition (``paused``: its QEMU runs, its
        CPUs wait for ``resume`` or ``destroy``, no guest code runs).
        ``TargetError`` if it runs already ("domain is already active") or fails
        to start."""
        ...

    def resume(self) -> None:
        """Let the CPUs of a VM started paused run. Not idempotent: ``TargetError``
        when it does not run or its CPUs run already."""
        ...

    def destroy(self) -> None:
        """Power the VM off at once (no guest shutdown; running block and backup jobs
        end with it). A transient VM vanishes from the host. Not idempotent:
        ``TargetError`` when it does not run."""
        ...

    def undefine(self) -> None:
        """Remove the definition with its checkpoint/snapshot metadata and managed
        save (NVRAM and TPM state files are kept). A running VM runs on, transient;
        a stopped one is gone. A VM that is transient already: ``TargetError`` on
        QEMU (libvirt's test driver accepts it)."""
        ...


class HypervisorHost(Protocol):
    """One open connection to a hypervisor: find, define, start VMs; list networks.

    Lookups are consistent with changes made through the same host. Not thread
    safe: one host per thread. ``close`` ends it; domains found through it go with it.
    """

    @property
    def uri(self) -> str:
        """Where it is connected (another process can open the same host with it)."""
        ...

    def domain(self, name: str) -> HypervisorDomain:
        """The VM named ``name``; ``SourceError`` ("no VM named ...") if there is none."""
        ...

    def find_domain(
        self, name: str | None = None, uuid: str | None = None
    ) -> HypervisorDomain | None:
        """The VM of this name (or, without a name, this UUID), or ``None``."""
        ...

    def domain_names(self) -> list[str]:
        """Names of every VM on the host: running or defined, transient included."""
        ...

    def define_domain(self, xml: str) -> HypervisorDomain:
        """Define a VM from ``xml`` and return it (a UUID is made up when the XML has
        none, so redefining needs the VM's UUID in the XML).

        Redefining a VM of the same name and UUID replaces its definition; a running
        VM keeps running as it was (the definition applies at its next start) and a
        running transient VM becomes persistent. ``TargetError`` when the XML is
        refused, or its name or UUID belongs to another VM (nothing changes).
        """
        ...

    def create_transient(self, xml: str, paused: bool = False) -> HypervisorDomain:
        """Start a transient VM from ``xml`` (``paused``: its CPUs wait for
        ``resume``); returns once its QEMU runs. ``TargetError`` when the XML is
        refused, the VM fails to start, a running VM has its name or UUID, or a
        defined one has its name and another UUID (a stopped defined VM of this
        name and UUID starts with ``xml`` as its live XML, and stays defined)."""
        ...

    def networks(self) -> dict[str, tuple[bool, str]]:
        """Every virtual network: name -> (active, XML). A network removed by someone
        else while this reads is left out."""
        ...

    def network_xml(self, name: str) -> str | None:
        """The XML of network ``name``, ``None`` if there is none (never raises for
        an unknown name)."""
        ...

    def create_network(self, xml: str) -> str:
        """Define and start a network (not autostarted); its name. ``TargetError``
        when refused or the name is taken; a network that defined but did not
        start is removed again."""
        ...

    def remove_network(self, name: str) -> None:
        """Stop (if active) and undefine network ``name``. ``TargetError`` if unknown."""
        ...

    def close(self) -> None:
        """End the connection. Idempotent."""
        ...
