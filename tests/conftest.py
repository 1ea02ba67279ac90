"""Fixtures every test directory may use: the real S3 server (``tests/s3/fixtures.py``)."""

pytest_plugins = ["tests.s3.fixtures"]
