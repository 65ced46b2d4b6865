"""Labelled images for the cost model: EmojiWorld renders or a user's folder / parquet.

Every source yields batches ``(images (B, 3, H, W) in [0, 1], CostLabels)``, so features can be
extracted from either in one pass (the backbone is frozen, see :mod:`scdpo.cost.train`).

User data (documented in docs/cost-model.md):
- a parquet file, or a folder of parquet shards, with an image column ``image`` (PNG/JPEG bytes,
  or the ``{"bytes", "path"}`` struct Hugging Face ``datasets`` writes) or ``path``;
- a folder of images with a ``metadata.csv`` / ``metadata.jsonl`` / ``metadata.parquet`` whose
  ``file_name`` column names each image (the ``datasets`` ImageFolder convention).
Label columns: ``label`` (or ``harmful``; 0/1, required, no NaN), ``category`` (or ``categories``;
I2P names, comma-separated or a list; optional) and ``severity`` (optional: 1 for harmful, 0 for safe).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scdpo.cost.backbone import resize_square
from scdpo.cost.losses import CostLabels
from scdpo.world.records import I2P_CATEGORIES
from scdpo.world.render import label_matrix, render_scenes
from scdpo.world.scene import Scene
from scdpo.world.suites import suite_scenes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
METADATA_FILES = ("metadata.parquet", "metadata.csv", "metadata.jsonl")
Batch = tuple[torch.Tensor, CostLabels]


def scene_labels(scenes: Sequence[Scene]) -> CostLabels:
    """Ground truth of rendered scenes: harmful if any harmful concept is drawn, the highest
    severity drawn, the I2P categories of the harmful concepts, and every concept drawn."""
    cats = torch.zeros(len(scenes), len(I2P_CATEGORIES))
    for i, s in enumerate(scenes):
        for c in s.harmful_categories:
            cats[i, I2P_CATEGORIES.index(c)] = 1
    return CostLabels(torch.tensor([s.harmful for s in scenes], dtype=torch.bool),
                      torch.tensor([float(s.severity) for s in scenes]), cats, label_matrix(scenes))


def balanced_scenes(suite: str, n: int, seed: int, harmful_fraction: float | None) -> list[Scene]:
    """``n`` scenes from the suite's stream in order; with ``harmful_fraction``, scenes of the
    over-represented class are skipped until the pool holds that fraction of harmful ones."""
    if harmful_fraction is None:
        return suite_scenes(suite, n, seed)
    want = {True: round(n * harmful_fraction), False: n - round(n * harmful_fraction)}
    out, start = [], 0
    while len(out) < n:
        for s in suite_scenes(suite, 4096, seed, start=start):
            if want[s.harmful] > 0:
                want[s.harmful] -= 1
                out.append(s)
        start += 4096
        if len(out) < n and start > max(200 * n, 4096):
            raise ValueError(f"suite {suite!r} cannot give a pool with harmful fraction {harmful_fraction}")
    return out


def render_batches(scenes: Sequence[Scene], batch_size: int, size: int = 64,
                   device: str | torch.device = "cpu") -> Iterator[Batch]:
    """The scenes rendered ``batch_size`` at a time on ``device``, each batch with its labels (on the CPU)."""
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i:i + batch_size]
        yield render_scenes(chunk, size, device), scene_labels(chunk)


# ---------------------------------------------------------------- decoding user images

def decode_image(data: bytes | str | Path, size: int, where: str) -> torch.Tensor:
    """Bytes or a file -> (3, size, size) in [0, 1]; any mode is converted to RGB, any size is
    resized (shorter side) and centre-cropped. A file that is not an image raises naming ``where``."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {data} ({where})") from None
    except Exception as e:  # PIL raises several types for corrupt data
        raise ValueError(f"cannot read image {where}: {e}") from None
    return resize_square(torch.from_numpy(arr).permute(2, 0, 1)[None], size)[0].clamp(0, 1)


def _image_source(row, columns, root: Path, where: str):
    """The bytes or path of a row's image (``image`` column, else ``path`` relative to ``root``)."""
    if "image" in columns:
        v = row["image"]
        if isinstance(v, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
            v = v.get("bytes") or v.get("path")
        if isinstance(v, (bytes, bytearray)):
            return bytes(v)
        if isinstance(v, str):
            return root / v
        raise ValueError(f"{where}: column 'image' holds {type(v).__name__}, not image bytes or a path")
    return root / str(row["path"])


def read_table(path: str | Path):
    """A pandas table from a parquet file / folder of shards, or a folder's metadata file, and the
    folder that relative image paths are resolved against."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image data: {path}")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: expected a .parquet file or a folder")
        return pd.read_parquet(path), path.parent, path
    for name in METADATA_FILES:
        meta = path / name
        if meta.is_file():
            table = (pd.read_parquet(meta) if name.endswith("parquet") else
                     pd.read_csv(meta) if name.endswith("csv") else pd.read_json(meta, lines=True))
            if "file_name" not in table.columns:
                raise ValueError(f"{meta}: missing column 'file_name' (the image file of each row)")
            return table.rename(columns={"file_name": "path"}), path, meta
    shards = sorted(path.glob("*.parquet"))
    if shards:
        return pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True), path, path
    raise FileNotFoundError(f"{path} has no parquet shards and no {' / '.join(METADATA_FILES)}")


def _column(table, names: tuple[str, ...], source, required: bool):
    for n in names:
        if n in table.columns:
            return n
    if required:
        raise ValueError(f"{source}: missing column {names[0]!r}" + (f" (or {names[1]!r})" if len(names) > 1 else "")
                         + f"; columns are {list(table.columns)}")
    return None


def _categories(value, where: str) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    items = [v for v in items if v]
    for v in items:
        if v not in I2P_CATEGORIES:
            raise ValueError(f"{where}: unknown category {v!r}; expected one of {list(I2P_CATEGORIES)}")
    return items


def table_labels(table, source) -> CostLabels:
    """Parse and check the label columns of a user table (see the module docstring)."""
    lab = _column(table, ("label", "harmful"), source, required=True)
    raw = table[lab].astype("float64")
    if raw.isna().any():
        rows = list(np.flatnonzero(raw.isna().to_numpy())[:5])
        raise ValueError(f"{source}: column {lab!r} has NaN/empty labels (rows {rows})")
    if not raw.isin([0.0, 1.0]).all():
        raise ValueError(f"{source}: column {lab!r} must hold 0/1 (safe/harmful), got {sorted(set(raw))[:5]}")
    harmful = torch.tensor(raw.to_numpy() > 0.5)
    cat_col = _column(table, ("category", "categories"), source, required=False)
    cats = torch.zeros(len(table), len(I2P_CATEGORIES))
    if cat_col:
        for i, v in enumerate(table[cat_col].tolist()):
            for c in _categories(v, f"{source} row {i} column {cat_col!r}"):
                cats[i, I2P_CATEGORIES.index(c)] = 1
    sev = harmful.float()  # default: 1 for harmful, 0 for safe
    if "severity" in table.columns:
        s = torch.tensor(table["severity"].astype("float64").to_numpy(), dtype=torch.float32)
        sev = torch.where(torch.isnan(s), sev, s)
    return CostLabels(harmful, torch.where(harmful, sev, torch.zeros_like(sev)), cats)


def table_images(table, root: Path, source, size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Decoded images of a table's rows, in order, in batches."""
    columns = set(table.columns)
    for lo in range(0, len(table), batch_size):
        rows = table.iloc[lo:lo + batch_size].to_dict("records")
        yield torch.stack([decode_image(_image_source(r, columns, root, f"{source} row {lo + k}"), size,
                                        f"{source} row {lo + k}") for k, r in enumerate(rows)])


def folder_images(path: str | Path) -> list[Path]:
    """The image files directly inside a folder, sorted by name; FileNotFoundError if none."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such folder: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def is_image_folder(path: str | Path) -> bool:
    """A folder of plain image files (no parquet shards, no metadata table)."""
    path = Path(path)
    return path.is_dir() and not any(path.glob("*.parquet")) and not any((path / m).is_file() for m in METADATA_FILES)


def image_batches(path: str | Path, size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Unlabelled images in batches: a folder of image files, or a parquet file / folder of shards
    (or a folder with a metadata file) with an ``image`` or ``path`` column."""
    path = Path(path)
    if is_image_folder(path):
        files = folder_images(path)
        for i in range(0, len(files), batch_size):
            yield torch.stack([decode_image(f, size, str(f)) for f in files[i:i + batch_size]])
        return
    table, root, source = read_table(path)
    _column(table, ("image", "path"), source, required=True)
    yield from table_images(table, root, source, size, batch_size)


def user_batches(path: str | Path, size: int, batch_size: int) -> tuple[int, Iterator[Batch]]:
    """(number of rows, batches of (images, labels)) from a user's labelled folder or parquet."""
    table, root, source = read_table(path)
    labels = table_labels(table, source)  # checked before any image is decoded
    _column(table, ("image", "path"), source, required=True)

    def gen():
        for k, images in enumerate(table_images(table, root, source, size, batch_size)):
            sl = slice(k * batch_size, k * batch_size + len(images))
            yield images, labels.select(sl)
    return len(table), gen()
