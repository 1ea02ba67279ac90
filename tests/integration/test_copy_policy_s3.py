"""Copy by policy to an S3 repository whose endpoint, region and credentials (a profile in
its own credentials file) come from the configuration, not the process environment;
against a real radosgw. The copy_to repository's own retention applies to the copies."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli import PASSPHRASE, Cli, without_surety
from tests.integration.conftest import write_image
from tests.s3.fixtures import S3Bucket

CONFIG = """
[repository.local]
location = "local"
passphrase_file = "passphrase"

[repository.offsite]
location = "s3://{bucket}/copies"
passphrase_file = "passphrase"
endpoint = "{endpoint}"
region = "{region}"
profile = "surety-offsite"
credentials_file = "aws-credentials"
retention = {{ keep_last = 1 }}

[policy.nightly]
repository = "local"
vms = ["web*"]
schedule = "daily"
copy_to = "offsite"
"""


def _no_aws(tmp_path: Path) -> dict[str, str]:
    """This host's environment without any S3 setting (and wrong keys, which must not win)."""
    env = without_surety(os.environ, ("AWS_", "SURETY_"))
    env.update(
        HOME=str(tmp_path / "home"),
        AWS_ACCESS_KEY_ID="not-these",
        AWS_SECRET_ACCESS_KEY="not-these-either",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # nothing listens there
    )
    return env


def test_copy_by_policy_uses_the_repositorys_own_s3_settings(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    server = s3_bucket.environ("backup")
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    (tmp_path / "aws-credentials").write_text(
        "[surety-offsite]\n"
        f"aws_access_key_id = {server['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {server['AWS_SECRET_ACCESS_KEY']}\n"
    )
    config = tmp_path / "surety.toml"
    config.write_text(
        CONFIG.format(
            bucket=s3_bucket.name,
            endpoint=server["AWS_ENDPOINT_URL"],
            region=server["AWS_DEFAULT_REGION"],
        )
    )
    s3 = Cli(tmp_path, {**_no_aws(tmp_path), **server, "SURETY_PASSPHRASE": PASSPHRASE})
    s3.run("--repo", f"s3://{s3_bucket.name}/copies", "init", "--chunk-size", "64K")
    local = Cli(
        tmp_path,
        {
            **_no_aws(tmp_path),
            "SURETY_REPOSITORY": str(tmp_path / "local"),
            "SURETY_PASSPHRASE": PASSPHRASE,
        },
    )
    local.run("init", "--chunk-size", "64K")
    image = tmp_path / "web01.img"
    for seed in (1, 2):
        write_image(image, 2 << 20, seed)
        local.run("backup", "image", image, "--name", "web01")
    write_image(tmp_path / "db1.img", 1 << 20, 3)
    local.run("backup", "image", tmp_path / "db1.img", "--name", "db1")  # not the policy's

    here = Cli(tmp_path, {**_no_aws(tmp_path), "SURETY_CATALOG": str(tmp_path / "c.sqlite")})
    assert here.run("config", "check", "--config", config).returncode == 0
    report = here.json("copy", "--policy", "nightly", "--config", config)
    assert (report["copied"], report["skipped"]) == (2, 0)
    assert {p["name"] for p in report["points"]} == {"web01"}
    assert len(report["target_forgotten"]) == 1  # keep_last = 1 in the target
    copies = s3.json("--repo", f"s3://{s3_bucket.name}/copies", "points")
    assert [p["name"] for p in copies] == ["web01"]
    newest = local.json("points", "--name", "web01")[-1]
    assert copies[0]["source"]["copied_from"]["point"] == newest["id"]

    config.write_text(config.read_text().replace('"surety-offsite"', '"nobody"'))
    bad = here.run("copy", "--policy", "nightly", "--config", config, check=False)
    assert bad.returncode == 2
    assert "repository.offsite.profile: no profile 'nobody' in" in bad.stderr
    assert "Traceback" not in bad.stderr

    (tmp_path / "wrong-passphrase").write_text("not the target's\n")
    config.write_text(
        config.read_text()
        .replace('"nobody"', '"surety-offsite"')
        .replace(
            'passphrase_file = "passphrase"\nendpoint',
            'passphrase_file = "wrong-passphrase"\nendpoint',
        )
    )
    bad = here.run("copy", "--policy", "nightly", "--config", config, check=False)
    assert bad.returncode == 4, bad.stderr
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith(
        "surety: error: the copy's target [repository.offsite]: wrong passphrase"
    )
    assert line.endswith("wrong-passphrase)")  # where that passphrase came from
