"""Atomic file output: every file is written under a temporary name and renamed into place,
so a killed run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

#: zlib's level for the PNGs the commands write in bulk, images and grids (Pillow's default is 6). PNG is
#: lossless at any level, so the pixels are the same; level 1 encoded generated EmojiWorld images 2.4x faster on
#: one CPU thread for files 15% larger (benchmarks/png_encode.py; BENCHMARKS.md, "PNG encoding by zlib level").
#: The eval's and the data build's encoding runs beside the GPU's sampling, on the critical path once the
#: sampling is fast.
PNG_LEVEL = 1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would have
        tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_writable(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``folder`` if needed and prove it takes a file, before any long work: a read-only or
    full disk fails here, in one line naming the folder, instead of after hours of sampling."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {folder} is not writable ({err.strerror or err}); choose a writable folder") from err
    return folder


def load_safetensors(path: str | os.PathLike, what: str, device: str = "cpu") -> dict:
    """``safetensors.torch.load_file`` with one-line errors: a missing file is FileNotFoundError,
    a truncated or garbage one ValueError, both naming the file and ``what`` it should be."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file {path}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({err}); "
                         "it is truncated or damaged: restore or rebuild it") from err


def safe_name(name: str) -> str:
    """``name`` (e.g. a suite name read from a file) made into one harmless file-name component:
    no separators, no leading dots."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".") or "_"


def inside(folder: str | os.PathLike, rel: str | os.PathLike, what: str = "path") -> Path:
    """``folder / rel``, refused (ValueError) when it resolves outside ``folder`` (``..``, an
    absolute ``rel``, a symlink out): for paths built from names read out of files."""
    folder = Path(folder)
    path = folder / rel
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {str(rel)!r} points outside {folder}; refusing to use it")
    return path
