"""Seeded, batched classifier-free-guidance sampling for :class:`scdpo.models.t2i.T2IModel`.

Each image's initial noise comes from its own CPU ``torch.Generator().manual_seed(seed)``, so an
image depends only on (prompt, seed, config): not on which other prompts share its batch, nor on
the device (up to floating point differences of the device's kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from scdpo.models.t2i import T2IModel

SCHEDULERS = ("dpmsolver++", "ddim", "euler")


@dataclass
class SamplerConfig:
    """How :meth:`T2IModel.sample` generates images.

    steps: number of denoising steps.
    guidance_scale: classifier-free guidance weight w in ``uncond + w * (cond - uncond)``;
        ``<= 1`` disables guidance (one UNet pass per step on the prompts only).
    scheduler: ``"dpmsolver++"`` (DPM-Solver++ multistep), ``"ddim"`` (deterministic, eta=0) or
        ``"euler"``; all are built from the model's scheduler config (same betas, prediction type).
    negative_prompt: replaces the empty unconditional prompt of guidance.
    batch_size: images per UNet batch (with guidance, the UNet sees twice as many).
    height, width: image size in pixels; None means the model's native resolution.  Must be a
        multiple of the VAE's downsampling factor (8 for SD/SDXL).
    progress: show a tqdm bar over batches.
    """

    steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str = "dpmsolver++"
    negative_prompt: str | None = None
    batch_size: int = 64
    height: int | None = None
    width: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")


def make_scheduler(name: str, scheduler_config):
    """A fresh inference scheduler of kind ``name`` sharing ``scheduler_config``'s noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "ddim":  # clipping x0 to [-1, 1] is meant for pixel-space models, never for latents
        return DDIMScheduler.from_config(scheduler_config, clip_sample=False)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(scheduler_config)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


@torch.no_grad()
def sample_images(model: T2IModel, prompts: list[str], seeds: list[int], config: SamplerConfig) -> torch.Tensor:
    """See :meth:`T2IModel.sample`."""
    from scdpo.models.t2i import Conditioning

    if isinstance(prompts, str) or len(prompts) != len(seeds):
        raise ValueError(f"need a list of prompts and one seed per prompt, got {len(prompts)} prompts "
                         f"and {len(seeds)} seeds")
    height, width = config.height or model.resolution, config.width or model.resolution
    factor = model.vae_scale_factor
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not a multiple of {factor}, the VAE downsampling "
                         f"factor of this model (its native resolution is {model.resolution})")
    latent_shape = (model.latent_channels, height // factor, width // factor)
    guided = config.guidance_scale > 1.0
    images = [torch.empty(0, 3, height, width)]
    for start in tqdm(range(0, len(prompts), config.batch_size), desc="sampling", unit="batch",
                      disable=not config.progress):
        batch = prompts[start:start + config.batch_size]
        cond = model.encode_prompts(batch, size=(height, width))
        if guided:
            uncond = model.unconditional(len(batch), config.negative_prompt, size=(height, width))
            cond = Conditioning.cat([uncond, cond])
        noise = torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(seed)))
                             for seed in seeds[start:start + len(batch)]])
        scheduler = make_scheduler(config.scheduler, model.scheduler_config)
        scheduler.set_timesteps(config.steps, device=model.device)
        latents = noise.to(model.device, model.dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(torch.cat([latents, latents]) if guided else latents, t)
            pred = model.predict(x, t, cond)
            if guided:
                uncond_pred, cond_pred = pred.chunk(2)
                pred = uncond_pred + config.guidance_scale * (cond_pred - uncond_pred)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        images.append(((model.decode_latents(latents) + 1) / 2).cpu())
    return torch.cat(images)
