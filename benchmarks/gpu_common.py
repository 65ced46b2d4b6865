"""What the two GPU benchmarks share: the SD 1.5 UNet shape, device sync and the wall-time budget."""

from __future__ import annotations

import signal

import torch

#: Stable Diffusion 1.5's UNet config (64x64x4 latents, 768-d text states), for random initialisation
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)


class OutOfBudget(Exception):
    """Raised by the alarm of :func:`hard_stop` when the wall-time budget is spent."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hard_stop(seconds: float) -> None:
    """Raise OutOfBudget in ``seconds`` (where SIGALRM exists): the caller catches it and still
    prints its table, so a run cut by its budget returns what it measured."""
    def out_of_time(signum, frame):
        raise OutOfBudget()
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, out_of_time)
        signal.alarm(int(seconds))
