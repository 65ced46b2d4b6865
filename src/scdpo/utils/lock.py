"""An exclusive lock per output folder, so two runs never write into the same folder at once.

``out/.scdpo.lock`` is held with ``fcntl.flock`` for the whole run and holds the owner's PID and
host for the error message. The kernel drops a flock when its process dies, however it dies, so a
lock file left behind by a killed run (a dead PID) is simply taken over by the next one.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".scdpo.lock"


class FolderLocked(ValueError):
    """Another live process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold ``folder``'s lock while the block runs; FolderLocked naming the holder if it is taken."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLocked(f"{folder} is in use by another {what} ({holder}); wait for it to finish "
                               "or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays (unlinking it would race a waiting taker)
