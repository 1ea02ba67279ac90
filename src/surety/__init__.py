"""surety: application-aware backup, restore and proven recovery for KVM/QEMU VMs.

Package map (dependency direction, top to bottom; held by import-linter):

    cli            adapters: parse -> call -> render; no business logic
    app            the one place that wires concrete adapters from options
    backup|restore use cases
    repo           the deduplicating, encrypted repository (knows nothing of VMs)
    core           errors, units, progress events; imports nothing else of surety
"""

__version__ = "0.1.0"
