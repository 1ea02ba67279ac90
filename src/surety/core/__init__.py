"""Core vocabulary shared by every layer: the error tree, units, progress events.

Must not import anything else of surety, nor any UI or I/O library.
"""
