"""Lazy imports of optional or heavy dependencies, with errors that say how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]

SETUP_HINT = "run `make setup` in the metasparse repository (see README.md, 'Installing with pip alone')"

_INSTALL_HINTS = {
    "learn2learn": SETUP_HINT + "; learn2learn 0.2.0 must be built from source on Python 3.11",
    "cvxpylayers": "pip install 'cvxpylayers>=1.2,<2'",
    "cvxpy": "pip install 'cvxpy>=1.9'",
    "h5py": "pip install 'metasparse[study]' (or: pip install h5py)",
    "sklearn": "pip install 'metasparse[study]' (or: pip install scikit-learn)",
    "matplotlib": "pip install 'metasparse[study]' (or: pip install matplotlib)",
}


def require(name: str) -> ModuleType:
    """Import ``name`` or raise an ``ImportError`` that says how to install it.

    Args:
        name: Dotted module name, e.g. ``"learn2learn"`` or ``"cvxpylayers.torch"``.

    Returns:
        The imported module.

    Example:
        >>> np = require("numpy")
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        top = name.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        raise ImportError(f"metasparse needs `{top}` for this feature but it is not importable "
                          f"({error}); to install it: {hint}") from error
