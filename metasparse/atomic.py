"""Atomic writes: a file, or a directory of files, is either the old one or the complete new one.

Temporaries live beside their target as ``.<name>.<pid>.tmp``. They are removed when the write fails,
is interrupted (Ctrl-C, or SIGTERM, turned into an exception while a write runs in the main thread), and,
for a process killed outright (SIGKILL), by the next write to the same target, which removes the
temporaries of processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["replace_directory_atomically", "write_atomically"]

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


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
    _remove_dead_temporaries(path)
    temporary = _temporary(path)
    try:
        with _sigterm_raises():
            write(temporary)
            _fsync(temporary)
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def replace_directory_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a new temporary directory beside ``path``, then swap it with ``path`` in one step.

    Readers see the old directory or the complete new one, never a mix: on Linux an existing ``path`` is
    exchanged with the new directory by ``renameat2(RENAME_EXCHANGE)``, one atomic step, and the old
    one is then deleted; elsewhere (or where the file system refuses the exchange) the old directory is
    first moved aside, a short window in which ``path`` is missing but never mixed. Every file is
    flushed to disk before the swap.

    Args:
        path: The directory to (re)place; its parent is created if missing. What it held is deleted. A
            symbolic link is followed: the directory it points to is replaced, the link stays.
        write: Fills the (empty) directory it is given.

    Returns:
        ``path`` as a `Path`.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> _ = replace_directory_atomically(out, lambda tmp: (tmp / "a.txt").write_text("1"))
        >>> _ = replace_directory_atomically(out, lambda tmp: (tmp / "b.txt").write_text("2"))
        >>> sorted(p.name for p in out.iterdir()), sorted(p.name for p in out.parent.iterdir())
        (['b.txt'], ['run'])
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(path)
    temporary = _temporary(path)
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        with _sigterm_raises():
            temporary.mkdir()
            write(temporary)
            for file in temporary.rglob("*"):
                if file.is_file():
                    _fsync(file)
            if not path.exists():
                os.rename(temporary, path)
            elif not _exchange(temporary, path):
                aside = temporary.with_name(temporary.name + ".old")
                os.rename(path, aside)
                os.rename(temporary, path)
                os.rename(aside, temporary)
            # the old directory, if any, is now at the temporary name
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available."""
    try:
        rename = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    return rename(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0


def _remove_dead_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` left by processes that no longer exist (killed outright)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.tmp(\.old)?")
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or _alive(int(match[1])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier, failed call
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a write runs in the main thread, SIGTERM raises ``SystemExit`` so that cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        if previous is not None:  # None: installed outside Python, which cannot be restored from here
            signal.signal(signal.SIGTERM, previous)
