"""The hypervisor host a command works on: the one place that opens libvirt for use cases.

``connect_host(uri)`` returns a ``HypervisorHost`` that connects to libvirt at
its first call, not before: a use case refuses what needs no hypervisor (an
unknown restore point, a bad option, no such instant VM) with its own message
and exit code whether or not libvirtd runs, exactly as when it connected
itself after those checks. A connection that fails raises ``SourceError``
from that first call. The caller closes the host (``contextlib.closing``);
closing one that never connected does nothing.

The guardian (``hypervisor.guardian``) is a process of its own and connects
by itself, to the host's ``uri``.
"""

from __future__ import annotations

from surety.hypervisor.libvirt_host import LibvirtHost, connect
from surety.hypervisor.port import HypervisorDomain, HypervisorHost

__all__ = ["connect_host"]


def connect_host(uri: str) -> HypervisorHost:
    """The libvirt host at ``uri``, connected at first use."""
    return _OnFirstUse(uri)


class _OnFirstUse:
    """A ``HypervisorHost`` that opens its ``LibvirtHost`` when first asked for anything."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._host: LibvirtHost | None = None

    def _open(self) -> LibvirtHost:
        if self._host is None:
            self._host = connect(self._uri)
        return self._host

    @property
    def uri(self) -> str:
        return self._uri

    def domain(self, name: str) -> HypervisorDomain:
        return self._open().domain(name)

    def find_domain(
        self, name: str | None = None, uuid: str | None = None
    ) -> HypervisorDomain | None:
        return self._open().find_domain(name, uuid)

    def domain_names(self) -> list[str]:
        return self._open().domain_names()

    def define_domain(self, xml: str) -> HypervisorDomain:
        return self._open().define_domain(xml)

    def create_transient(self, xml: str, paused: bool = False) -> HypervisorDomain:
        return self._open().create_transient(xml, paused)

    def networks(self) -> dict[str, tuple[bool, str]]:
        return self._open().networks()

    def network_xml(self, name: str) -> str | None:
        return self._open().network_xml(name)

    def create_network(self, xml: str) -> str:
        return self._open().create_network(xml)

    def remove_network(self, name: str) -> None:
        self._open().remove_network(name)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()


_HOST: type[HypervisorHost] = _OnFirstUse  # mypy holds it to the port
