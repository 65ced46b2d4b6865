"""Labelled image grids: the one function every report, sample dump and dataset card uses."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from scdpo.utils.io import PNG_LEVEL, atomic_path


def _to_uint8(images) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images as (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        arr = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [a if a.shape[-1] == 3 else np.repeat(a, 3, -1) for a in arr]
    return [np.asarray(im.convert("RGB")) for im in images]


def make_grid(images, captions: Sequence[str] | None = None, columns: int = 8, scale: int = 2,
              caption_lines: int = 3, pad: int = 4) -> Image.Image:
    """Tile images (a (B, 3, H, W) tensor in [0, 1] or PIL images) with a caption under each.

    Tiles are upscaled ``scale`` times with nearest-neighbour so small images stay crisp.
    """
    tiles = _to_uint8(images)
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    h, w = tiles[0].shape[:2]
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    line_h = 11
    chars = max(8, tw // 6)
    text_h = caption_lines * line_h + 2 if captions is not None else 0
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        x, y = pad + c * (tw + pad), pad + r * (th + text_h + pad)
        canvas.paste(Image.fromarray(tile).resize((tw, th), Image.NEAREST), (x, y))
        if captions is not None:
            lines = textwrap.wrap(str(captions[i]), chars)[:caption_lines]
            for k, line in enumerate(lines):
                draw.text((x, y + th + 1 + k * line_h), line, fill="black", font=font)
    return canvas


def save_grid(images, path: str | Path, captions: Sequence[str] | None = None, **kwargs) -> Path:
    """:func:`make_grid` written atomically to a PNG file."""
    path = Path(path)
    grid = make_grid(images, captions, **kwargs)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG", compress_level=PNG_LEVEL)
    return path
