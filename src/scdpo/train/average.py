"""One LoRA that is the weighted mean of several (a "soup" of training seeds; Wortsman et al. 2022,
"Model soups"), for `scdpo train average`.

Each adapter i changes a layer by ``ΔW_i = s_i · B_i A_i`` with peft's scale ``s_i = α_i / r_i``.
The mean change ``ΔW = Σ_i w_i ΔW_i`` is exactly one LoRA of rank ``Σ_i r_i``:

    A = [A_1; A_2; ...]  (rows stacked),   B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]  (columns),   α = r

the construction of peft's ``add_weighted_adapter(..., combination_type="cat")``; tests/test_average.py
checks it against diffusers fusing each LoRA at scale w_i. It works on the diffusers-format files
that `scdpo train` writes (``lora.down`` = A, ``lora.up`` = B, the adapter's config in the
``lora_adapter_metadata`` header), so no UNet is loaded and the result loads with
``load_lora_weights()`` and ``--lora`` like any trained LoRA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from scdpo.train.model import LORA_FILE
from scdpo.utils.io import atomic_path, atomic_write_text

META_KEY = "lora_adapter_metadata"


def _read(path: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """The weights file of a LoRA folder (or the file), its tensors and its adapter config."""
    from safetensors import safe_open

    path = Path(path)
    file = path / LORA_FILE if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"scdpo: error: {path}: no {LORA_FILE} there; give LoRA folders that `scdpo train` wrote")
    with safe_open(str(file), framework="pt") as f:
        header = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if META_KEY not in header:
        raise SystemExit(f"scdpo: error: {file} has no adapter config ({META_KEY}) in its header, so its alpha is "
                         "unknown; average LoRAs saved by `scdpo train` (diffusers' save_lora_weights)")
    return file, state, json.loads(header[META_KEY])


def _scale(file: Path, meta: dict, prefix: str) -> float:
    """peft's scale α / r of one adapter (a per-layer rank or alpha pattern, or rsLoRA, is refused)."""
    if meta.get(f"{prefix}.rank_pattern") or meta.get(f"{prefix}.alpha_pattern") or meta.get(f"{prefix}.use_rslora"):
        raise SystemExit(f"scdpo: error: {file} uses a per-layer rank/alpha pattern or rsLoRA; only uniform "
                         "adapters (as `scdpo train` writes them) can be averaged")
    return float(meta[f"{prefix}.lora_alpha"]) / float(meta[f"{prefix}.r"])


def average_loras(paths: list[str | os.PathLike], out: str | os.PathLike,
                  weights: list[float] | None = None) -> Path:
    """Write ``out/pytorch_lora_weights.safetensors``: the LoRA whose change is ``Σ_i w_i ΔW_i``
    (module docstring; ``weights`` default to 1/n each). Every input must adapt the same layers.
    Saved in the inputs' dtype under a temporary name, then renamed; returns the file."""
    from safetensors.torch import save_file

    if len(paths) < 2:
        raise SystemExit("scdpo: error: give at least two LoRA folders to average")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise SystemExit(f"scdpo: error: --weights has {len(weights)} value(s) for {len(paths)} LoRAs; give one each")
    loaded = [_read(p) for p in paths]
    file0, state0, meta0 = loaded[0]
    prefix = next(k.split(".", 1)[0] for k in meta0 if k.endswith(".r"))  # "unet" (SD3: "transformer")
    for file, state, _ in loaded[1:]:
        if state.keys() != state0.keys():
            raise SystemExit(f"scdpo: error: {file} adapts other layers than {file0}; average LoRAs of one recipe")
    scales = [_scale(file, meta, prefix) for file, _, meta in loaded]
    merged, rank = {}, None
    for key in state0:
        if ".lora.down." in key or ".lora_A." in key:
            continue
        if ".lora.up." not in key and ".lora_B." not in key:
            raise SystemExit(f"scdpo: error: {file0} holds {key}, which is no LoRA matrix; average LoRA files only")
        down = key.replace(".lora.up.", ".lora.down.").replace(".lora_B.", ".lora_A.")
        ups = [w * s * st[key].float() for (_, st, _), w, s in zip(loaded, weights, scales)]
        merged[key] = torch.cat(ups, dim=1).to(state0[key].dtype)
        merged[down] = torch.cat([st[down] for _, st, _ in loaded], dim=0)
        rank = merged[down].shape[0]
    meta = {**meta0, f"{prefix}.r": rank, f"{prefix}.lora_alpha": float(rank)}  # scale 1: s_i is inside B
    out = Path(out)
    with atomic_path(out / LORA_FILE) as tmp:  # readable like a trained LoRA (safetensors alone writes 0600)
        save_file({k: merged[k].contiguous() for k in state0}, str(tmp),
                  metadata={META_KEY: json.dumps(meta, indent=2, sort_keys=True), "format": "pt"})
    sources = {"average_of": [str(f) for f, _, _ in loaded], "weights": weights, "rank": rank}
    atomic_write_text(out / "average.json", json.dumps(sources, indent=2) + "\n")
    return out / LORA_FILE
