#!/usr/bin/env python3
"""A float16 copy of a LoRA folder (issue 15's device rounds; BENCHMARKS.md, "Seventeenth round"):
``pytorch_lora_weights.safetensors`` with every floating tensor in half precision and the file's
metadata kept (the adapter's config, so alpha survives), beside the folder's ``config.json`` and
``metrics.json``. A rank-32 EmojiWorld LoRA is 6.6 MB in float32, so a round's 12 LoRAs (79 MB) do
not fit the device's 64 MiB of returned files; in float16 they do (40 MB), and they come back with
the round's other results in every call instead of in a separate call after it. ``--lora`` of
every scdpo command loads it as it loads the float32 file (``T2IModel.load_lora``: diffusers'
``load_lora_weights`` casts to the model's dtype, then ``fuse_lora``). Written under a temporary
name, then renamed.

    python benchmarks/lora_half.py runs/r18/lora-NAME-s0 runs/r18/half/lora-NAME-s0
    python benchmarks/lora_half.py --all runs/r18    # every finished lora-*-s* without a copy in runs/r18/half
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LORA_FILE = "pytorch_lora_weights.safetensors"


def half_copy(src: Path, dst: Path) -> Path:
    """Write ``dst/`` from the LoRA folder ``src/``; returns the weights file written."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if not (src / LORA_FILE).is_file():
        raise SystemExit(f"{src}: no {LORA_FILE} there; give a LoRA folder that `scdpo train` wrote")
    with safe_open(str(src / LORA_FILE), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / f".{name}.tmp")
            os.replace(dst / f".{name}.tmp", dst / name)
    save_file(state, str(dst / f".{LORA_FILE}.tmp"), metadata=meta)
    os.replace(dst / f".{LORA_FILE}.tmp", dst / LORA_FILE)
    return dst / LORA_FILE


def half_all(root: Path) -> list[Path]:
    """Copy every finished ``root/lora-*-s*`` (its weights exist: the trainer writes them last, by a
    rename) that has no copy in ``root/half`` yet; one process for all (torch's import is most of
    the time of one copy)."""
    done = []
    for src in sorted(root.glob("lora-*-s[0-9]*")):
        dst = root / "half" / src.name
        if (src / LORA_FILE).is_file() and not (dst / LORA_FILE).is_file():
            done.append(half_copy(src, dst))
    return done


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--all":
        print("\n".join(map(str, half_all(Path(sys.argv[2])))))
    elif len(sys.argv) == 3:
        print(half_copy(Path(sys.argv[1]), Path(sys.argv[2])))
    else:
        raise SystemExit("usage: python benchmarks/lora_half.py SRC_LORA_FOLDER DST_FOLDER | --all ROUND_FOLDER")
