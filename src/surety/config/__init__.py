"""The configuration file (``surety.toml``): policies, repositories, notification targets.

``model``: the frozen, typed configuration the rest of surety sees. ``load``:
``load_config``/``check_config``/``default_config_path`` (TOML in, every problem
found up front). ``errors``: ``Problem`` (``FILE[:LINE]: key.path: why``) and
``ConfigError`` (a ``UsageError``, exit 2). ``lines``: where a key path is written.
``reader``: typed reads that collect problems. ``policy`` and ``targets``: one policy
or notification table each. ``select``: which VMs of a host a policy covers.

Must not know: libvirt, repositories' contents, the catalog. It only describes.
"""

from surety.config.errors import ConfigError, Problem
from surety.config.load import (
    DEFAULT_CONFIG,
    check_config,
    default_config_path,
    host_timezone,
    load_config,
)
from surety.config.model import (
    CheckRule,
    Config,
    NotificationTarget,
    Policy,
    RepositoryConfig,
    Retention,
    RetryRule,
    Selection,
    ServiceSettings,
    VerifyRule,
)
from surety.config.select import select_vms, unknown_names

__all__ = [
    "DEFAULT_CONFIG",
    "CheckRule",
    "Config",
    "ConfigError",
    "NotificationTarget",
    "Policy",
    "Problem",
    "RepositoryConfig",
    "Retention",
    "RetryRule",
    "Selection",
    "ServiceSettings",
    "VerifyRule",
    "check_config",
    "default_config_path",
    "host_timezone",
    "load_config",
    "select_vms",
    "unknown_names",
]
