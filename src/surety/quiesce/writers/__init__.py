"""The built-in writers: ``fsfreeze``, ``postgresql``, ``mariadb``, ``script``.

Registered as plugins under the ``surety.writers`` entry-point group (see
``pyproject.toml``), like third-party writers. They reach the guest only
through the ``GuestChannel`` they are given; their guest-side scripts live in
``guest/`` and are pushed at run time.
"""
