"""Batch rows padded to a power of two: a denoiser that sees batches of every size from 1 to B
(the safe anchor's rows change from batch to batch) then sees a handful of sizes, which CUDA graphs
(:mod:`scdpo.models.graphs`) and regional compile (``T2IModel.pad_rows``) each need, one graph per
size (docs/performance.md)."""

from __future__ import annotations

import torch

__all__ = ["pad_to", "padded_rows"]


def padded_rows(n: int) -> int:
    """The row count a batch of ``n`` rows is padded to: the next power of two (1 -> 1, 5 -> 8)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def pad_to(x: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """``x`` with zero rows appended up to ``rows`` (None, a 0-dim tensor or one already that long as is)."""
    if x is None or x.dim() == 0 or x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])
