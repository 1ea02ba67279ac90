"""The passphrase keys a spare worker derives ahead: the run's opening skips argon2 only
for the same passphrase, salt and cost; a failure ahead of need is left to the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2.low_level import hash_secret_raw

from surety.app.configured import derive_configured_keys, open_configured_repository
from surety.app.repository import create_repository
from surety.config import load_config
from surety.config.model import Config
from surety.core.errors import WrongPassphrase
from surety.repo import crypto
from surety.repo.crypto import KdfParams, remember_derived_keys
from surety.repo.keyring import passwd

CHEAP = KdfParams(time_cost=1, memory_kib=1024, parallelism=1)

CONFIG = """\
[service]
catalog = "{tmp}/catalog.sqlite"

[repository.main]
location = "{tmp}/repo"
passphrase_file = "{tmp}/passphrase"

[repository.gone]
location = "{tmp}/no-such-repo"
passphrase_file = "{tmp}/passphrase"
"""


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The salts argon2 was really run for (the real function, counted)."""
    calls: list[bytes] = []
    real: Callable[..., bytes] = hash_secret_raw

    def counted(secret: bytes, salt: bytes, **kwargs: Any) -> bytes:
        calls.append(salt)
        return real(secret, salt, **kwargs)

    monkeypatch.setattr(crypto, "hash_secret_raw", counted)
    yield calls
    remember_derived_keys(False)


def configured(tmp_path: Path, passphrase: str = "right") -> Config:
    (tmp_path / "passphrase").write_text(passphrase + "\n")
    path = tmp_path / "surety.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return load_config(path)


def test_derived_ahead_the_run_skips_argon2_for_the_same_passphrase_only(
    tmp_path: Path, argon2_calls: list[bytes]
) -> None:
    create_repository(str(tmp_path / "repo"), "right", kdf=CHEAP)
    argon2_calls.clear()
    derive_configured_keys(configured(tmp_path))  # "gone" fails quietly
    assert len(argon2_calls) == 1
    repo = open_configured_repository(configured(tmp_path), "main")
    assert repo.config.id
    assert len(argon2_calls) == 1  # the memo gave the key
    with pytest.raises(WrongPassphrase):
        open_configured_repository(configured(tmp_path, "changed"), "main")
    assert len(argon2_calls) == 2  # another passphrase: derived afresh
    repo = open_configured_repository(configured(tmp_path), "main")
    assert len(argon2_calls) == 2
    kept, crypto._derived = crypto._derived, None  # as `surety key passwd` elsewhere would:
    passwd(repo, "right", CHEAP)  # the same passphrase in a new key file (a new salt)
    crypto._derived = kept
    calls = len(argon2_calls)
    open_configured_repository(configured(tmp_path), "main")
    assert len(argon2_calls) == calls + 1  # derived afresh for the new salt


def test_without_the_memo_every_opening_derives(tmp_path: Path, argon2_calls: list[bytes]) -> None:
    create_repository(str(tmp_path / "repo"), "right", kdf=CHEAP)
    remember_derived_keys(False)
    argon2_calls.clear()
    open_configured_repository(configured(tmp_path), "main")
    open_configured_repository(configured(tmp_path), "main")
    assert len(argon2_calls) == 2


def test_a_missing_passphrase_file_ahead_of_need_is_left_to_the_run(
    tmp_path: Path, argon2_calls: list[bytes]
) -> None:
    create_repository(str(tmp_path / "repo"), "right", kdf=CHEAP)
    config = configured(tmp_path)
    (tmp_path / "passphrase").unlink()
    argon2_calls.clear()
    derive_configured_keys(config)
    assert argon2_calls == []
