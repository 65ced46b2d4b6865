"""What the two GPU benchmarks share: the SD 1.5 UNet shape, device sync and the wall-time budget."""

from __future__ import annotations

import argparse
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


def cancel_stop() -> None:
    if hasattr(signal, "SIGALRM"):
        signal.alarm(0)


def exit_now(code: int) -> None:
    """Exit without interpreter teardown (compile workers, the CUDA context): on the device tool,
    teardown time would eat into the call's budget."""
    import os
    import sys

    sys.stdout.flush()
    os._exit(code)


def hard_stop(seconds: float) -> None:
    """Raise OutOfBudget in ``seconds`` (where SIGALRM exists): the caller catches it and still
    prints its table, so a run cut by its budget returns what it measured."""
    def out_of_time(signum, frame):
        raise OutOfBudget()
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, out_of_time)
        signal.alarm(int(seconds))


def base_parser(doc: str, tiny_help: str, budget_s: float) -> argparse.ArgumentParser:
    """The flags both benchmarks take: --tiny, --attention, --precision, --budget-s, --out."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help=tiny_help)
    p.add_argument("--attention", default="cudnn",
                   help="preferred SDPA kernels tried as levers, comma list of flash, cudnn, efficient (the other rows "
                        "use torch's own choice)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="compute precision (default bf16; --tiny: fp32)")
    p.add_argument("--budget-s", type=float, default=budget_s, help="wall-time budget; rows that would not fit are skipped")
    p.add_argument("--out", default=None, help="append JSON lines here, flushed after every row")
    return p
