"""Optional dependencies: import them with a message that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from samkit.errors import SamkitError


class MissingExtraError(SamkitError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``samkit[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the '{module}' package, which is not installed: "
            f"pip install 'samkit[{extra}]'"
        ) from exc
