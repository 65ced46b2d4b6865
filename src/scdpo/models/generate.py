"""Sample images from any T2I model for an EmojiWorld suite or a prompt file, and index them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scdpo.models.sampler_config import SamplerConfig
from scdpo.prompts.records import load_records
from scdpo.utils.config import nested

# the sampler settings `generate` and `eval` expose as flags
SAMPLER_FLAGS = ("steps", "guidance_scale", "scheduler", "negative_prompt", "guard", "batch_size", "dtype",
                 "compile")


@dataclass
class GenerateConfig:
    """What `scdpo generate` samples and where it writes.

    Attributes:
        model: a local diffusers StableDiffusion(XL)Pipeline folder, or "emojiworld".
        out: output folder: images/*.png, grid.png and index.parquet.
        lora: a diffusers LoRA (folder or .safetensors file) fused into the model, or a shipped
            LoRA's name: "emojiworld-safe" is the aligned EmojiWorld model (docs/results.md).
        lora_scale: LoRA strength when fusing.
        suite: an EmojiWorld suite name (see `scdpo world suites`).
        prompts: a prompt file instead of a suite (I2P, CoProV2, COCO, PartiPrompts CSV/TSV, or text).
        limit: use only the first N prompts.
        n_per_prompt: images per prompt; image k of prompt i uses seed ``seed + i * n_per_prompt + k``.
        sampler: how images are sampled (a SamplerConfig); its flags --steps, --guidance-scale,
            --scheduler, --negative-prompt, --guard, --batch-size, --dtype and --compile are this command's.
        seed: base seed.
        device: torch device (default: cuda if available, else cpu).
        grid_size: images in grid.png.
    """

    model: str
    out: str
    suite: str | None = None
    prompts: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    limit: int | None = None
    n_per_prompt: int = 1
    seed: int = 0
    device: str | None = None
    grid_size: int = 64
    sampler: SamplerConfig = nested(SamplerConfig, SAMPLER_FLAGS)

    def __post_init__(self):
        from scdpo.utils.config import check_finite

        check_finite(self)
        if (self.suite is None) == (self.prompts is None):
            raise ValueError("give exactly one of --suite and --prompts")
        if self.n_per_prompt < 1:
            raise ValueError(f"--n-per-prompt must be >= 1, got {self.n_per_prompt}")


def run(cfg: GenerateConfig) -> Path:
    from scdpo.models.t2i import T2IModel
    from scdpo.utils.grid import save_grid
    from scdpo.utils.io import atomic_path, atomic_write_text, check_writable
    from scdpo.world.dataset import png_bytes_many
    from scdpo.world.image_index import write_image_index

    records = load_records(cfg.suite, cfg.prompts, cfg.limit)
    check_writable(cfg.out)  # before sampling: a read-only --out fails now, not after the whole run
    model = T2IModel.for_sampling(cfg.model, cfg.sampler, device=cfg.device, lora=cfg.lora, lora_scale=cfg.lora_scale)
    expanded = [(i, k, r) for i, r in enumerate(records) for k in range(cfg.n_per_prompt)]
    prompts = [r.prompt for _, _, r in expanded]
    seeds = [cfg.seed + i * cfg.n_per_prompt + k for i, k, _ in expanded]
    images = model.sample(prompts, seeds, cfg.sampler)
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files, pngs = [], png_bytes_many(images)
    for (i, k, _), png in zip(expanded, pngs):
        files.append(f"images/{i:05d}-{k:02d}.png")
        with atomic_path(out / files[-1]) as tmp:
            tmp.write_bytes(png)
    write_image_index(out / "index.parquet", pngs, [r for *_, r in expanded], seeds, [i for i, *_ in expanded],
                      files=files)
    n = min(cfg.grid_size, len(images))
    save_grid(images[:n], out / "grid.png", prompts[:n])
    atomic_write_text(out / "generate.json", json.dumps({
        "model": cfg.model, "lora": cfg.lora, "images": len(images), "steps": cfg.sampler.steps,
        "guidance_scale": cfg.sampler.guidance_scale, "scheduler": cfg.sampler.scheduler,
        "dtype": model.dtype_name}, indent=1))
    print(f"wrote {len(images)} images to {out}")
    return out
