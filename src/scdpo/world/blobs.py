"""Concept-free images: what a judge must read as *nothing*.

An aligned model that "refuses" by smearing the harmful sprite draws shapes that hold no concept.
A judge trained only on scenes of 1-3 sprites never saw such images and reads one anyway (the
shipped judge before the fourth round found a concept on 66% of flat backgrounds, docs/results.md).
These generators make such images for training the judge (``scdpo world pretrain-judge
--negatives``) and for measuring its false positives (``benchmarks/judge_blobs.py``): flat
backgrounds, smooth noise, soft colour blobs, and real scenes blurred until their sprites are smears.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("flat", "noise", "blobs", "smear")


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, reflect-padded; ``sigma`` in pixels, one
    for all images or one per image (N,)."""
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    sig = sig.expand(len(x)) if sig.numel() == 1 else sig
    r = max(1, math.ceil(3 * float(sig.max())))
    r = min(r, x.shape[-1] - 1)
    taps = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (taps[None] / sig[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.dtype)  # (N, 2r+1)
    n, c, h, w = x.shape
    kk = k.repeat_interleave(c, 0)  # one kernel per (image, channel)
    y = F.conv2d(F.pad(x.reshape(1, n * c, h, w), (r, r, 0, 0), mode="reflect"), kk.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kk.view(n * c, 1, -1, 1), groups=n * c)
    return y.reshape(n, c, h, w)


def concept_free(kind: str, n: int, size: int, gen: torch.Generator, scenes: torch.Tensor | None = None,
                 sigma: tuple[float, float] = (4.0, 8.0)) -> torch.Tensor:
    """``n`` images (n, 3, size, size) in [0, 1] of one ``kind`` (:data:`KINDS`). ``smear`` blurs
    ``scenes`` (n rendered scenes) with a per-image sigma drawn uniformly from ``sigma`` px."""
    if kind == "flat":
        return torch.rand(n, 3, 1, 1, generator=gen).expand(n, 3, size, size).clone()
    if kind == "noise":
        low = torch.rand(n, 3, 4, 4, generator=gen)
        return F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    if kind == "blobs":
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        img = torch.rand(n, 3, 1, 1, generator=gen).expand(n, 3, size, size).clone()
        for _ in range(3):  # three soft ellipses of random colour
            cx, cy = torch.rand(n, 1, 1, generator=gen), torch.rand(n, 1, 1, generator=gen)
            sx = 0.05 + 0.2 * torch.rand(n, 1, 1, generator=gen)
            sy = 0.05 + 0.2 * torch.rand(n, 1, 1, generator=gen)
            alpha = torch.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2)).unsqueeze(1)
            img = img * (1 - alpha) + torch.rand(n, 3, 1, 1, generator=gen) * alpha
        return img
    if kind == "smear":
        if scenes is None or len(scenes) != n:
            raise ValueError("concept_free('smear') blurs n rendered scenes: pass scenes of length n")
        s = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(n, generator=gen)
        return gaussian_blur(scenes.float().cpu(), s).clamp(0, 1).to(scenes.device)
    raise ValueError(f"unknown concept-free kind {kind!r}; choose one of {', '.join(KINDS)}")


def mixed_negatives(scenes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Concept-free replacements for a batch of rendered ``scenes`` (N, 3, S, S): each image
    becomes one of :data:`KINDS` at random (``smear`` blurs that very scene)."""
    n, size = len(scenes), scenes.shape[-1]
    kind = torch.randint(len(KINDS), (n,), generator=gen)
    out = torch.empty_like(scenes)
    for i, name in enumerate(KINDS):
        idx = (kind == i).nonzero().flatten()
        if len(idx):
            made = concept_free(name, len(idx), size, gen, scenes[idx] if name == "smear" else None)
            out[idx] = made.to(out)
    return out
