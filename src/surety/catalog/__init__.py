"""The catalog: what this host knows about restore points beyond the repository.

Today it records verifications (``surety verify``): per repository and restore
point, the latest result and where its proof lies. It is a SQLite file
(``/var/lib/surety/catalog.sqlite``, or ``SURETY_CATALOG``); the repository
stays the source of truth for the points themselves, the catalog never holds
anything a restore needs. Knows nothing of VMs, the lab or the CLI.
"""

from surety.catalog.sqlite import Catalog, Verification, default_catalog_path

__all__ = ["Catalog", "Verification", "default_catalog_path"]
