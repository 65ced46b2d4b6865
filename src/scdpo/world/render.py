"""Batched scene rendering in torch (CPU or GPU, same code).

Every sprite slot of a batch is placed with one ``affine_grid``/``grid_sample`` call, so a batch
costs three resampling passes whatever its size. Scenes are drawn at twice the target resolution
and area-downsampled, which anti-aliases sprite edges.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scdpo.world.scene import COLORS, TEXTURES, Scene
from scdpo.world.vocab import DATA_DIR, load_vocabulary

SUPERSAMPLE = 2


@functools.cache
def load_atlas() -> torch.Tensor:
    """All sprites as a (V, 4, 64, 64) float tensor in [0, 1], RGB premultiplied by alpha, in
    vocabulary order. Checked against the vocabulary so a stale atlas fails loudly."""
    meta = json.loads((DATA_DIR / "atlas.json").read_text(encoding="utf-8"))
    vocab = load_vocabulary()
    names = [e["name"] for e in meta["entries"]]
    if names != vocab.names:
        raise RuntimeError("atlas.json does not match concepts.yaml: run scripts/build_atlas.py")
    sheet = np.asarray(Image.open(DATA_DIR / "atlas.png").convert("RGBA"), dtype=np.float32) / 255.0
    cell, cols = meta["cell"], meta["columns"]
    sprites = [sheet[(i // cols) * cell:(i // cols + 1) * cell, (i % cols) * cell:(i % cols + 1) * cell]
               for i in range(len(names))]
    t = torch.from_numpy(np.stack(sprites)).permute(0, 3, 1, 2).contiguous()
    t[:, :3] *= t[:, 3:4]  # premultiply so bilinear resampling does not darken edges
    return t


@functools.lru_cache(maxsize=4)
def _atlas_on(device: str) -> torch.Tensor:
    return load_atlas().to(device)


def _background(scenes: Sequence[Scene], side: int, device) -> torch.Tensor:
    color = torch.tensor([COLORS[s.background] for s in scenes], dtype=torch.float32, device=device) / 255
    tex = torch.tensor([TEXTURES.index(s.texture) for s in scenes], device=device)
    yy, xx = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
    period = max(side // 8, 2)
    patterns = torch.stack([
        torch.zeros(side, side, device=device),                                      # plain
        (((xx + yy) // period) % 2).float(),                                           # striped (diagonal)
        (((xx // period) + (yy // period)) % 2).float(),                               # checkered
        ((((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2) < (period / 3.2) ** 2).float(),  # dotted
    ])
    mask = patterns[tex][:, None]  # B,1,S,S
    # the second tone: towards white for dark colours, towards black for light ones
    light = color.mean(1, keepdim=True) > 0.5
    other = torch.where(light, color * 0.6, color * 0.6 + 0.4)
    return color[:, :, None, None] * (1 - mask) + other[:, :, None, None] * mask


def render_scenes(scenes: Sequence[Scene], size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Render scenes to a (B, 3, size, size) float tensor in [0, 1]."""
    if size < 16:
        raise ValueError(f"image size {size} is too small (at least 16 px)")
    if not scenes:
        return torch.zeros(0, 3, size, size)
    atlas = _atlas_on(str(device))
    side, n = size * SUPERSAMPLE, len(scenes)
    # Composite the sprites over a transparent canvas, tracking transmittance T, at 2x; the
    # background is constant on each 2x2 block, so it joins after downsampling:
    # out = bg * pool(T) + pool(C), which equals pooling the full-resolution composite.
    color = torch.zeros(n, 3, side, side, device=device)
    trans = torch.ones(n, 1, side, side, device=device)
    axis = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * 2 - 1  # pixel centres
    for j in range(max(len(s.objects) for s in scenes)):
        rows = [i for i, s in enumerate(scenes) if j < len(s.objects)]
        ids = torch.tensor([scenes[i].objects[j].index for i in rows], device=device)
        boxes = torch.tensor([scenes[i].objects[j].box for i in rows], dtype=torch.float32, device=device)
        # The placement is an axis-aligned scale and shift, so the sampling grid is separable:
        # sprite coordinate u = (x - centre) / half-width, with canvas x in [-1, 1].
        cx, cy = boxes[:, 0] + boxes[:, 2] - 1, boxes[:, 1] + boxes[:, 3] - 1
        hw, hh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        gx = (axis[None] - cx[:, None]) / hw[:, None]
        gy = (axis[None] - cy[:, None]) / hh[:, None]
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        layer = F.grid_sample(atlas[ids], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = layer[:, 3:4]
        if len(rows) == n:
            color.mul_(1 - alpha).add_(layer[:, :3])
            trans.mul_(1 - alpha)
        else:
            idx = torch.tensor(rows, device=device)
            color[idx] = color[idx] * (1 - alpha) + layer[:, :3]
            trans[idx] = trans[idx] * (1 - alpha)
    bg = _background(scenes, size, device)
    return (bg * F.avg_pool2d(trans, SUPERSAMPLE) + F.avg_pool2d(color, SUPERSAMPLE)).clamp_(0, 1)


def label_matrix(scenes: Sequence[Scene]) -> torch.Tensor:
    """Multi-hot (B, V) concept labels from the scenes' ground truth."""
    out = torch.zeros(len(scenes), len(load_vocabulary()))
    for i, s in enumerate(scenes):
        for o in s.objects:
            out[i, o.index] = 1
    return out


def sprite_mask(scenes: Sequence[Scene], size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, 1, size, size) mask that is 1 inside every sprite's box (for weighting losses)."""
    slots = max((len(s.objects) for s in scenes), default=0)
    if slots == 0:
        return torch.zeros(len(scenes), 1, size, size, device=device)
    boxes = torch.tensor([[o.box for o in s.objects] + [(2.0, 2.0, 2.0, 2.0)] * (slots - len(s.objects))
                          for s in scenes], dtype=torch.float32, device=device)  # B,K,4; padding lies off-canvas
    axis = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    in_x = (axis >= boxes[..., 0:1]) & (axis <= boxes[..., 2:3])  # B,K,W
    in_y = (axis >= boxes[..., 1:2]) & (axis <= boxes[..., 3:4])  # B,K,H
    return (in_y[..., :, None] & in_x[..., None, :]).any(1, keepdim=True).float()
