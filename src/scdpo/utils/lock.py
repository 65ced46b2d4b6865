"""An exclusive lock per output folder, so two runs never write into the same folder at once.

``out/.scdpo.lock`` is held with ``fcntl.flock`` for the whole run and holds the owner's PID and
host for the error message; it is removed when the run ends. The kernel drops a flock when its
process dies, however it dies, so the lock file a killed run leaves behind (naming a dead PID) is
simply taken over by the next run, which also removes the temporary files a killed run leaves
(nobody else can be writing them while it holds the lock).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".scdpo.lock"  # hidden: `datasets` skips it when loading a folder
# what a killed writer leaves: scdpo.utils.io.atomic_path's files, the LoRA and UNet export folders
TEMP_FILES, TEMP_DIRS = ".*.tmp", (".lora-*", ".unet.*", ".pipeline.*")


class FolderLocked(ValueError):
    """Another live process holds the folder's lock."""


def _acquire(path: Path, what: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise FolderLocked(f"{path.parent} is in use by another {what} ({holder}); wait for it to finish "
                               "or use another --out") from None
        try:  # the holder we waited on may have removed the file: lock the one that is there now
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold ``folder``'s lock while the block runs; FolderLocked (a ValueError) naming the holder's
    PID if a live process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = _acquire(path, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        remove_stale_temporaries(folder)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before the unlock: a run that opened it meanwhile sees the inode change
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files and folders a killed run left in ``folder`` (call with its lock held)."""
    for f in folder.rglob(TEMP_FILES):
        if f.is_file():
            f.unlink(missing_ok=True)
    for pattern in TEMP_DIRS:
        for d in folder.glob(pattern):
            shutil.rmtree(d, ignore_errors=True)
