"""ESD's resumable state: the LoRA, the optimiser's moments, the random-number state and the losses,
in ``OUT/.esd-state/`` (safetensors + JSON, written beside and renamed into place), so a killed run
restarts at its last checkpoint and ends with the same LoRA as an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_DIR = ".esd-state"


def save_state(out: str | Path, settings: dict, step: int, params: list[torch.Tensor],
               optimizer: torch.optim.Optimizer, rng_state, losses: list[float]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"param.{i}": p.detach().float().cpu().contiguous() for i, p in enumerate(params)}
    for i, s in opt["state"].items():
        for k, v in s.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).float().cpu().contiguous()
    record = {"settings": settings, "step": step, "rng": rng_state, "losses": losses,
              "param_groups": opt["param_groups"]}
    tmp = Path(tempfile.mkdtemp(prefix=f"{STATE_DIR}.", dir=out))
    try:
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(record))
        if (out / STATE_DIR).exists():
            shutil.rmtree(out / STATE_DIR)
        os.rename(tmp, out / STATE_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_state(out: str | Path, settings: dict, params: list[torch.Tensor],
               optimizer: torch.optim.Optimizer) -> tuple[int, object, list[float]] | None:
    """(step, rng state, losses) after loading params and optimiser; None when there is no state.
    ValueError when the state was made with other settings."""
    folder = Path(out) / STATE_DIR
    if not (folder / "state.json").is_file():
        return None
    record = json.loads((folder / "state.json").read_text())
    if record["settings"] != settings:
        diff = {k: (record["settings"].get(k), v) for k, v in settings.items() if record["settings"].get(k) != v}
        raise ValueError(f"{folder} holds an ESD run with other settings (was, now): {diff}; use another --out "
                         f"or delete {folder}")
    tensors = load_file(folder / "state.safetensors")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"])
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v.to(params[int(i)].device) if k != "step" else v
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    return record["step"], record["rng"], record["losses"]


def clear_state(out: str | Path) -> None:
    shutil.rmtree(Path(out) / STATE_DIR, ignore_errors=True)
