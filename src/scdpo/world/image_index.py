"""Sampled images and their prompts as one parquet (``generate``'s index, ``eval``'s per-suite
images): one row per image, readable with ``datasets.load_dataset("parquet", ...)``."""

from __future__ import annotations

import os
from typing import Sequence

from scdpo.world.records import PromptRecord


def write_image_index(path: str | os.PathLike, pngs: Sequence[bytes], records: Sequence[PromptRecord],
                      seeds: Sequence[int], prompt_index: Sequence[int], k: Sequence[int] | None = None,
                      files: Sequence[str] | None = None) -> None:
    """Write ``path`` atomically with the columns [file,] image (PNG), prompt, seed, prompt_index,
    [k,] categories, concepts; ``file`` and ``k`` only when given (one value per image)."""
    import datasets

    from scdpo.utils.io import atomic_path

    seq = datasets.Sequence(datasets.Value("string"))
    int64 = datasets.Value("int64")
    rows, features = {}, {}
    if files is not None:
        rows["file"], features["file"] = list(files), datasets.Value("string")
    rows["image"], features["image"] = [{"bytes": b, "path": None} for b in pngs], datasets.Image()
    rows["prompt"], features["prompt"] = [r.prompt for r in records], datasets.Value("string")
    rows["seed"], features["seed"] = list(seeds), int64
    rows["prompt_index"], features["prompt_index"] = list(prompt_index), int64
    if k is not None:
        rows["k"], features["k"] = list(k), int64
    rows["categories"], features["categories"] = [list(r.categories) for r in records], seq
    rows["concepts"], features["concepts"] = [list(r.concepts) for r in records], seq
    with atomic_path(path) as tmp:
        datasets.Dataset.from_dict(rows, features=datasets.Features(features)).to_parquet(str(tmp))
