"""Endless, deterministic, resumable streams of EmojiWorld scenes for training.

``SceneStream`` is an ``IterableDataset`` of *batches of scene descriptions* (rendering happens on
the training device, see :func:`scdpo.world.render.render_scenes`). Batch ``b`` always holds scenes
``b*B .. b*B+B-1`` of the suite, so a run resumed at batch ``b`` sees exactly the data an
uninterrupted run would, and DataLoader workers split batches round-robin without overlap.
"""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info

from scdpo.world.suites import suite_scenes


class SceneStream(IterableDataset):
    def __init__(self, suite: str = "train", batch_size: int = 64, seed: int = 0, start_batch: int = 0):
        self.suite, self.batch_size, self.seed, self.start_batch = suite, batch_size, seed, start_batch

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        b = self.start_batch + wid
        while True:
            yield suite_scenes(self.suite, self.batch_size, self.seed, start=b * self.batch_size)
            b += nw


def scene_loader(suite: str, batch_size: int, seed: int = 0, start_batch: int = 0, workers: int = 0):
    """A DataLoader over :class:`SceneStream` that yields lists of scenes, in batch order."""
    return torch.utils.data.DataLoader(
        SceneStream(suite, batch_size, seed, start_batch), batch_size=None, num_workers=workers,
        collate_fn=lambda x: x, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
    )
