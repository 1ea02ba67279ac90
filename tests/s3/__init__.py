"""A real S3 server for tests (Ceph radosgw on loopback) and its pytest fixtures."""
