"""Files of the data folder: readable by the bridge's own user only.

The data folder holds what must not leak (card ids until their command ends, Smartcar's tokens, the
journal, the keys of the stores' fingerprints): every folder locktwin makes in it is 0700 and every
file 0600, from the moment it exists (created with that mode, never chmod-ed after the fact, so no
other user can open it in between). Files and folders made by an older version are narrowed when
opened. SQLite gives a database's ``-wal`` and ``-shm`` the mode of the database file, so a
database created here keeps its journals private too.

Exception tree: none of its own; ``OSError`` as the OS raises it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "private_file", "private_folder", "write_private"]

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """Make ``path`` (and any missing parents) 0700; an existing folder of ours is narrowed to 0700.

    A parent that already exists is left as it is: it may be the operator's (``/var/lib``)."""
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process: narrowed below
            folder.mkdir(mode=FOLDER_MODE)
    _narrow(path, FOLDER_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist; narrow it to 0600 if it does
    (with its SQLite ``-wal``, ``-shm`` and ``-journal`` files, when there are any)."""
    private_folder(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _narrow(companion, FILE_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a crash leaves the old file or the new one), mode
    0600 from the start; durable once this returns."""
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a stale temporary file of a crashed run may have another mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)


def _narrow(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        path.chmod(mode)
