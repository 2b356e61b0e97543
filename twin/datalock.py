"""One process per data folder: a second bridge (or demo) on the same store would fight the first
over its SQLite file, its MQTT client id and its session."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from twin.files import private_file, private_folder

__all__ = ["DataDirLock", "DataDirLocked"]


class DataDirLocked(RuntimeError):
    """Another running process holds the folder, or it cannot be used at all (read-only, not ours)."""


class DataDirLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, held while the context is open (the kernel drops
    it when the process dies, so a crash leaves no stale lock behind)."""

    def __init__(self, folder: Path, *, what: str) -> None:
        self.folder = folder
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self.folder / ".lock"
        try:
            private_folder(self.folder)
            fd = os.open(private_file(path), os.O_RDWR)
        except OSError as exc:
            raise DataDirLocked(f"{self.folder}: cannot be used ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirLocked(
                f"{self.folder} is in use by {holder} (a {self.what} is already running on it); "
                "stop it first, or give this one another data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
