"""Core vocabulary shared by every layer.

    ``errors``      the one error tree, each error with its exit code
    ``units``       byte sizes parsed and formatted (binary units)
    ``progress``    progress events: the core is silent, adapters render
    ``interrupts``  stop requests (SIGINT, SIGTERM) deferred past a point of no return
    ``processes``   a process named by pid and start time: a pid alone may be reused

Must not import anything else of surety, nor any UI or I/O library.
"""

__all__ = ["errors", "interrupts", "processes", "progress", "units"]
