"""Each package's docstring and ``__all__`` say what it holds, and stay true.

A module added to ``core``, ``backup`` or ``app`` must be named in the
package's ``__all__`` and described in its docstring; a package added to
surety must appear in the package map of ``surety/__init__.py``.
"""

from __future__ import annotations

import pkgutil
import re
from types import ModuleType

import pytest

import surety
import surety.app
import surety.backup
import surety.core


def _modules(package: ModuleType) -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__))


@pytest.mark.parametrize(
    "package", [surety.core, surety.backup, surety.app], ids=lambda p: p.__name__
)
def test_package_all_and_docstring_name_every_module(package: ModuleType) -> None:
    modules = _modules(package)
    assert sorted(package.__all__) == modules, (
        f"{package.__name__}: list its modules in __all__ and describe them in its docstring"
    )
    for module in modules:
        assert f"``{module}``" in (package.__doc__ or ""), (
            f"{package.__name__}'s docstring does not describe ``{module}``"
        )


def test_the_package_map_names_every_package_of_surety() -> None:
    mapped = set(re.findall(r"\b[a-z_]+\b", surety.__doc__ or ""))
    packages = {info.name for info in pkgutil.iter_modules(surety.__path__) if info.ispkg}
    assert packages <= mapped, f"not in surety's package map: {sorted(packages - mapped)}"
