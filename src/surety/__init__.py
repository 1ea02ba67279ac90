"""surety: application-aware backup, restore and proven recovery for KVM/QEMU VMs.

Package map (dependency direction, top to bottom; held by import-linter, see
``[tool.importlinter]`` in pyproject.toml):

    cli                      adapters: parse -> call -> render; no business logic
    web                      the web console and REST API (started by ``surety web``)
    service                  the long-running process that runs due jobs on a host
    app                      the one place that wires concrete adapters from options
    jobs                     one run of a policy's job (backup, verify, check); status
    verify                   use case: boot restore points in an isolated lab, probe, prove
    backup | restore | notify
                             use cases: back up a disk or a VM; restore disks, VMs, files;
                             tell people about runs (email, webhooks)
    config                   the configuration file: policies, repositories, targets
    quiesce                  writers and the requester: a consistent instant in the guest
    schedule                 when jobs run: calendar expressions, missed runs
    repo | hypervisor | catalog
                             the repository (knows nothing of VMs); libvirt, NBD and the
                             guest agent; what this host records about restore points
    core                     errors, units, progress events, stop requests; imports
                             nothing else of surety

Beside the layers, ``testing`` holds conformance suites and fakes; production
code never imports it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
