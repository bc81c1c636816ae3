"""Atomic file writes: a file is either the old one or the complete new one, never half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, flush it to disk, then move it into place.

    The temporary file is removed if ``write`` fails, or if the process is interrupted before the move.
    Its name is ``.<name>.<pid>.tmp`` in the same folder (so the move is atomic), created with the
    usual permissions (``tempfile.mkstemp`` would make it private).

    Args:
        path: The file to (re)place; its folder is created if missing.
        write: Writes the content to the path it is given.

    Returns:
        ``path`` as a `Path`.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "results.json"
        >>> write_atomically(out, lambda tmp: tmp.write_text("{}")).read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
