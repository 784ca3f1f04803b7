"""A worker's local copies of resources, bounded in bytes, least recently used out.

On Cloud Run the disk is memory: an instance that kept every mesh it ever fetched would
run out of it. Files are named by their SHA-256, so a copy is never stale; a hit marks
the file used (its mtime), and after a download the least recently used others are
removed until the total fits ``limit`` (the file just fetched always stays, even alone
over the limit: the task needs it).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Callable


class ResourceCache:
    def __init__(self, directory: pathlib.Path, limit: int):
        self.dir = pathlib.Path(directory)
        self.limit = limit

    def path(self, sha256: str, download: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """The local copy of resource ``sha256``; ``download(path)`` writes it if absent."""
        path = self.dir / sha256
        if path.exists():
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)  # most recently used
                return path
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".part-")
        os.close(fd)
        try:
            download(pathlib.Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.evict(keep=path)
        return path

    def files(self) -> list[tuple[float, int, pathlib.Path]]:
        """(last use, size, path) of every complete copy, least recently used first."""
        found = []
        for p in self.dir.iterdir():
            if p.name.startswith(".part-"):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                found.append((st.st_mtime_ns, st.st_size, p))
        return sorted(found)

    def size(self) -> int:
        return sum(size for _, size, _ in self.files())

    def evict(self, keep: pathlib.Path) -> None:
        entries = self.files()
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if total <= self.limit:
                return
            if p == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= size
