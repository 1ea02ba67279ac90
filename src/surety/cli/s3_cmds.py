"""``surety s3 policy``: the bucket policy that keeps the backup host from deleting data."""

from __future__ import annotations

import json

import click

from surety.cli.options import GlobalOptions
from surety.cli.render import out_console
from surety.core.errors import UsageError

__all__ = ["COMMANDS"]


@click.group()
def s3() -> None:
    """S3 bucket administration for repositories on object storage."""


@s3.command()
@click.argument("location", required=False, metavar="[s3://BUCKET/PREFIX]")
@click.option(
    "--backup-user",
    required=True,
    metavar="NAME|ARN",
    help="The backup host's identity: an IAM ARN, or a radosgw user name.",
)
@click.option(
    "--maintenance-user",
    required=True,
    metavar="NAME|ARN",
    help="The maintenance identity (the bucket's owner): an IAM ARN, or a radosgw user name.",
)
@click.option(
    "--apply",
    is_flag=True,
    help="Set it on the bucket with the maintenance identity (SURETY_S3_MAINT_*), "
    "which must own the bucket.",
)
@click.pass_context
def policy(
    ctx: click.Context, location: str | None, backup_user: str, maintenance_user: str, apply: bool
) -> None:
    """Print (or --apply) the bucket policy of an immutable repository.

    The backup identity may read, write and extend locks under PREFIX, and
    delete only PREFIX/locks/; deleting anything else is denied explicitly.
    The maintenance identity (the bucket's owner) may do everything under PREFIX.
    """
    options: GlobalOptions = ctx.obj
    location = location or options.repo
    if not location or not location.startswith("s3://"):
        raise UsageError("give an s3://BUCKET/PREFIX location (or --repo)")
    # imported here: boto3 loads slowly and only S3 commands need it
    from surety.repo.storage.s3 import (  # noqa: PLC0415
        apply_bucket_policy,
        bucket_policy,
        parse_s3_location,
    )

    bucket, prefix = parse_s3_location(location)
    document = bucket_policy(bucket, prefix, backup_user, maintenance_user)
    if apply:
        apply_bucket_policy(location, document)
        out_console.print(f"bucket policy set on {bucket}", highlight=False)
        return
    click.echo(json.dumps(document, indent=2))


COMMANDS = [s3]
