"""The test S3 server: Ceph radosgw on loopback, started by ``scripts/s3-up``.

``scripts/s3-up DIR`` prints shell ``export`` lines (endpoint, the backup
identity's keys, the maintenance identity's keys, region, no metadata probe);
this module runs it, parses those lines into an ``S3Server`` and makes boto3
clients for either identity. It imports nothing of surety: the server is test
infrastructure, and surety's own S3 backend is what the tests exercise.

Invariants: only loopback endpoints are ever used (a test never talks to a real
cloud); boto3 1.26 (Debian's, which ``.venv`` sees) ignores ``AWS_ENDPOINT_URL``,
so every client here is given the endpoint explicitly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

__all__ = [
    "REPO_ROOT",
    "Identity",
    "S3Server",
    "is_loopback_endpoint",
    "no_delete_policy",
    "parse_exports",
    "server_from_environ",
    "start_server",
    "stop_server",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
S3_UP = REPO_ROOT / "scripts" / "s3-up"
S3_DOWN = REPO_ROOT / "scripts" / "s3-down"
# A first start creates the cluster (~15-25 s); a loaded CI machine gets room.
START_TIMEOUT = 600

BACKUP_USER = "surety-backup"
MAINTENANCE_USER = "surety-maint"

_EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Identity:
    """One radosgw user's S3 keys."""

    user: str
    access_key_id: str
    secret_access_key: str

    @property
    def principal(self) -> str:
        """The user as a bucket policy names it (radosgw: no account id)."""
        return f"arn:aws:iam:::user/{self.user}"


@dataclass(frozen=True)
class S3Server:
    """A running radosgw: where it answers and the two identities' keys.

    ``backup`` is the identity a backup host holds (meant to have no delete on
    data); ``maintenance`` is the one ``forget``/``prune`` run with.
    """

    endpoint_url: str
    region: str
    backup: Identity
    maintenance: Identity
    directory: Path | None = None  # where scripts/s3-up keeps it; None: found in the env

    def environ(self, identity: Literal["backup", "maintenance"] = "backup") -> dict[str, str]:
        """Environment variables for a process that talks to this server as ``identity``.

        The AWS variables carry ``identity``'s keys; the maintenance keys are
        always there too, as ``SURETY_S3_MAINT_*`` (what ``scripts/s3-up`` prints).
        """
        chosen = self.backup if identity == "backup" else self.maintenance
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": chosen.access_key_id,
            "AWS_SECRET_ACCESS_KEY": chosen.secret_access_key,
            "SURETY_S3_MAINT_ACCESS_KEY_ID": self.maintenance.access_key_id,
            "SURETY_S3_MAINT_SECRET_ACCESS_KEY": self.maintenance.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, identity: Literal["backup", "maintenance"] = "backup") -> Any:
        """A new boto3 S3 client for ``identity`` (path-style); the caller closes it."""
        import boto3  # noqa: PLC0415 - only S3 tests need it; they require() it first
        from botocore.config import Config  # noqa: PLC0415

        chosen = self.backup if identity == "backup" else self.maintenance
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=chosen.access_key_id,
            aws_secret_access_key=chosen.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )


def is_loopback_endpoint(url: str) -> bool:
    """True for ``http(s)://127.x.x.x|localhost|[::1]:PORT`` endpoints."""
    host = urlparse(url).hostname or ""
    return host in {"localhost", "::1"} or host.startswith("127.")


def parse_exports(text: str) -> dict[str, str]:
    """The ``NAME=value`` pairs of ``export NAME=value`` lines (shell-quoted values allowed)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _EXPORT.match(line.strip())
        if match:
            words = shlex.split(match.group(2))
            values[match.group(1)] = words[0] if words else ""
    return values


def server_from_environ(environ: Mapping[str, str], directory: Path | None = None) -> S3Server:
    """The server described by ``scripts/s3-up``'s variables; KeyError names a missing one."""
    return S3Server(
        endpoint_url=environ["AWS_ENDPOINT_URL"],
        region=environ.get("AWS_DEFAULT_REGION") or "default",
        backup=Identity(
            BACKUP_USER, environ["AWS_ACCESS_KEY_ID"], environ["AWS_SECRET_ACCESS_KEY"]
        ),
        maintenance=Identity(
            MAINTENANCE_USER,
            environ["SURETY_S3_MAINT_ACCESS_KEY_ID"],
            environ["SURETY_S3_MAINT_SECRET_ACCESS_KEY"],
        ),
        directory=directory,
    )


def start_server(directory: Path, timeout: float = START_TIMEOUT) -> S3Server:
    """Run ``scripts/s3-up directory`` (start, restart or just describe) and parse its exports.

    Raises ``RuntimeError`` with the script's stderr when it fails.
    """
    proc = subprocess.run(
        [str(S3_UP), str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "S3_UP_TIMEOUT": str(int(timeout // 3))},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/s3-up {directory} failed ({proc.returncode}):\n{proc.stderr}")
    return server_from_environ(parse_exports(proc.stdout), directory)


def stop_server(directory: Path) -> None:
    """Run ``scripts/s3-down directory``: the daemons exit, the data stays."""
    subprocess.run([str(S3_DOWN), str(directory)], capture_output=True, timeout=120, check=True)


def no_delete_policy(bucket: str, backup: Identity, deletable_prefix: str = "locks/") -> str:
    """A bucket policy (JSON) for a bucket the maintenance identity owns.

    The backup identity may read, list, write and upload in parts everywhere, and
    delete only under ``deletable_prefix`` (locks and other short-lived objects);
    an explicit Deny keeps it from deleting (or deleting a version of) anything else.
    The owner (maintenance) keeps every right, and alone may change the policy.
    """
    import json  # noqa: PLC0415

    everything = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    who = {"AWS": [backup.principal]}
    statements = [
        {
            "Sid": "backup-read-write",
            "Effect": "Allow",
            "Principal": who,
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectRetention",
                "s3:PutObject",
                "s3:PutObjectRetention",
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:ListBucketMultipartUploads",
                "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload",
                "s3:GetBucketVersioning",
                "s3:GetBucketObjectLockConfiguration",
            ],
            "Resource": everything,
        },
        {
            "Sid": "backup-delete-short-lived",
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{deletable_prefix}*"],
        },
        {
            "Sid": "backup-never-deletes-data",
            "Effect": "Deny",
            "Principal": who,
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "NotResource": [f"arn:aws:s3:::{bucket}/{deletable_prefix}*"],
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
