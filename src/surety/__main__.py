"""``python -m surety``: the same as the ``surety`` command."""

from surety.cli.main import main

main()
