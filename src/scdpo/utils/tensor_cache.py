"""Tensors computed once per distinct setting and kept on disk as safetensors: the cost model's
feature pools (``scdpo cost train --cache``) and the Frechet reference's features of `scdpo eval`
(``$SCDPO_CACHE/frechet``). The file name carries a digest of the settings the caller names (its
``keys``, which must cover what changes the tensors), so a changed setting is a new file; files are
written under a temporary name and renamed (a killed run leaves no half-written cache entry)."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


def digest(keys: dict) -> str:
    """16 hex digits of SHA-1 over ``keys`` as sorted JSON."""
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(folder: str | Path, name: str, keys: dict) -> Path:
    """Where :func:`cached_tensors` keeps the tensors of ``keys`` (whether or not they are there yet)."""
    return Path(folder).expanduser() / f"{name}-{digest(keys)}.safetensors"


def cached_tensors(folder: str | Path | None, name: str, keys: dict,
                   make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``make()`` once per distinct ``keys``; kept as ``folder/name-DIGEST.safetensors``. With no
    ``folder``, ``make()`` every time; where the folder cannot be written, a warning, and the result; an
    unreadable entry (a damaged disk, a foreign file) is computed and written again."""
    from safetensors.torch import load_file, save_file

    from scdpo.utils.io import atomic_path

    if not folder:
        return make()
    path = cache_path(folder, name, keys)
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error types on a damaged file)
            warnings.warn(f"{path} is unreadable ({e}); computing it again", stacklevel=2)
    tensors = make()
    try:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    except OSError as e:  # a read-only or full disk costs the next run the computation, not this one its result
        warnings.warn(f"could not keep {path} ({e.strerror or e}); set $SCDPO_CACHE (or --cache) to a writable folder",
                      stacklevel=2)
    return tensors
