"""Checkpoint mechanics shared by every training loop (``train`` and ``world.pretrain``): the
``out/checkpoints/step-N`` folders, written complete or not at all, rotated, and the
mixed-precision choice of the accelerator that writes them. What a loop records beside the
accelerate state (train's fingerprint and trainer state) stays with that loop."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in ``out/checkpoints``, oldest first."""
    return sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(acc, out: Path, step: int, keep: int, extra: dict[str, str] | None = None) -> None:
    """Write ``out/checkpoints/step-{step}`` with ``acc.save_state`` (every process takes part) plus
    the text files ``extra`` (name -> contents, written by the main process), then keep the newest
    ``keep``. The folder is written under a temporary name and renamed, so it exists only once it
    is complete; an existing ``step-{step}`` is kept as is."""
    target = out / "checkpoints" / f"step-{step}"
    if target.exists():
        return
    tmp = out / "checkpoints" / f".tmp-step-{step}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()  # nobody writes into the folder before it is cleared
    acc.save_state(str(tmp), safe_serialization=True)
    acc.wait_for_everyone()  # every process's state is on disk before the rename
    if acc.is_main_process:
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        tmp.rename(target)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()  # nobody reads the checkpoints before the rotation is done


def reset_accelerate_state() -> None:
    """Forget an earlier run's accelerate settings in this process (a training before a pretraining,
    tests, a notebook): accelerate refuses another precision once its state is set. The process
    group, if any, is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def resolve_mixed_precision(mp: str) -> str:
    """``auto`` -> the `accelerate launch` config's choice, else bf16 on CUDA, else ``no``."""
    if mp != "auto":
        return mp
    import torch

    return os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if torch.cuda.is_available() else "no")
