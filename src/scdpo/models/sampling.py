"""Seeded, batched classifier-free-guidance sampling for :class:`scdpo.models.t2i.T2IModel`.

Each image's initial noise comes from its own CPU ``torch.Generator().manual_seed(seed)``, so an
image depends only on (prompt, seed, config): not on which other prompts share its batch, nor on
the device (up to floating point differences of the device's kernels).
"""

from __future__ import annotations

import contextlib
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
    negative_prompt: replaces the empty unconditional prompt of guidance: one for every image, or a
        list with one per prompt (None entries: the empty prompt).
    batch_size: images per UNet batch (with guidance, the UNet sees twice as many).
    height, width: image size in pixels; None means the model's native resolution.  Must be a
        multiple of the VAE's downsampling factor (8 for SD/SDXL).
    progress: show a tqdm bar over denoising steps (batches x steps).
    attention: the scaled-dot-product attention kernel preferred on CUDA: ``"auto"`` (torch's
        choice), ``"flash"``, ``"cudnn"``, ``"efficient"`` or ``"math"`` (docs/performance.md).
    fuse_qkv: fuse the q/k/v projections of every attention layer into one matmul while
        sampling (restored afterwards; ignored when the UNet carries LoRA adapters, which the fused
        layer would bypass). Off by default: on an H200 it changed nothing (docs/performance.md).
    channels_last: run the UNet and VAE in channels-last memory format while sampling.
    compile: ``torch.compile`` the UNet's resnet and transformer blocks (in place, once; the
        first batch takes longer while it compiles).
    vae_batch_size: images per VAE decoder call.
    guard: an inference-time safety guard (:mod:`scdpo.guards`): ``"sld:weak|medium|strong|max"``
        (Safe Latent Diffusion) or ``"safree"``; None: plain classifier-free guidance.
    """

    steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str = "dpmsolver++"
    negative_prompt: str | list[str | None] | None = None
    batch_size: int = 64
    height: int | None = None
    width: int | None = None
    progress: bool = True
    attention: str = "auto"
    fuse_qkv: bool = False
    channels_last: bool = False
    compile: bool = False
    vae_batch_size: int = 8
    guard: str | None = None

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if self.steps < 1 or self.batch_size < 1 or self.vae_batch_size < 1:
            raise ValueError(f"steps, batch_size and vae_batch_size must be >= 1, got {self.steps}, "
                             f"{self.batch_size} and {self.vae_batch_size}")
        from scdpo.models.speed import ATTENTION_BACKENDS

        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {self.attention!r}; choose one of {ATTENTION_BACKENDS}")
        from scdpo.guards import get_guard

        get_guard(self.guard)  # ValueError naming an unknown guard or option


def make_scheduler(name: str, scheduler_config, family: str = "sd"):
    """A fresh inference scheduler of kind ``name`` sharing ``scheduler_config``'s noise schedule,
    in the form the model ``family`` needs (:meth:`scdpo.models.families.Family.make_scheduler`)."""
    from scdpo.models.families import get_family

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    return get_family(family).make_scheduler(name, scheduler_config)


def speed_levers(model: T2IModel, config: SamplerConfig) -> contextlib.ExitStack:
    """The context in which :func:`sample_images` runs the UNet: ``config``'s speed levers."""
    from scdpo.models import speed

    stack = contextlib.ExitStack()
    stack.enter_context(speed.attention_backend(config.attention, model.device))
    if config.fuse_qkv:
        stack.enter_context(speed.fused_qkv(model.unet))
    if config.channels_last:
        for module in (model.unet, model.vae):
            stack.enter_context(speed.channels_last(module))
    if config.compile:
        speed.compile_blocks(model.unet)
    return stack


@torch.no_grad()
def sample_images(model: T2IModel, prompts: list[str], seeds: list[int], config: SamplerConfig) -> torch.Tensor:
    """See :meth:`T2IModel.sample`."""
    if isinstance(prompts, str) or len(prompts) != len(seeds):
        raise ValueError(f"need a list of prompts and one seed per prompt, got {len(prompts)} prompts "
                         f"and {len(seeds)} seeds")
    if isinstance(config.negative_prompt, list) and len(config.negative_prompt) != len(prompts):
        raise ValueError(f"{len(config.negative_prompt)} negative prompts for {len(prompts)} prompts")
    with speed_levers(model, config):
        return _sample(model, prompts, seeds, config)


def _sample(model: T2IModel, prompts: list[str], seeds: list[int], config: SamplerConfig) -> torch.Tensor:
    from scdpo.guards import get_guard
    from scdpo.models.t2i import Conditioning

    guard = get_guard(config.guard)
    height, width = config.height or model.resolution, config.width or model.resolution
    factor = model.vae_scale_factor
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not a multiple of {factor}, the VAE downsampling "
                         f"factor of this model (its native resolution is {model.resolution})")
    latent_shape = (model.latent_channels, height // factor, width // factor)
    guided = config.guidance_scale > 1.0
    images = [torch.empty(0, 3, height, width)]
    # counts denoising steps, not batches: a 64-image batch is minutes on a CPU, a step seconds
    n_batches = -(-len(prompts) // config.batch_size)
    bar = tqdm(total=n_batches * config.steps, desc=f"sampling {len(prompts)} images", unit="step",
               disable=not config.progress, leave=False)
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start:start + config.batch_size]
        cond = text = model.encode_prompts(batch, size=(height, width))
        uncond = None
        if guided:
            neg = config.negative_prompt
            neg = neg[start:start + len(batch)] if isinstance(neg, list) else neg
            uncond = model.unconditional(len(batch), neg, size=(height, width))
            cond = Conditioning.cat([uncond, cond])
        run = guard.start(model, batch, text, uncond, config) if guard is not None else None
        noise = torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(seed)))
                             for seed in seeds[start:start + len(batch)]])
        scheduler = make_scheduler(config.scheduler, model.scheduler_config, model.family)
        scheduler.set_timesteps(config.steps, device=model.device)
        # flow-matching schedulers start at unit noise and take the model input as is
        latents = noise.to(model.device, model.dtype) * getattr(scheduler, "init_noise_sigma", 1.0)
        scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
        for i, t in enumerate(scheduler.timesteps):
            if run is not None:  # a guard chooses the conditionings and how they combine
                c = run.conditioning(i)
                x = scale(latents.repeat(len(c) // len(latents), 1, 1, 1), t)
                latents = scheduler.step(run.combine(i, model.predict(x, t, c)), t, latents, return_dict=False)[0]
                continue
            x = scale(torch.cat([latents, latents]) if guided else latents, t)
            pred = model.predict(x, t, cond)
            if guided:
                uncond_pred, cond_pred = pred.chunk(2)
                pred = uncond_pred + config.guidance_scale * (cond_pred - uncond_pred)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            bar.update(1)
        images.append(((model.decode_latents(latents, batch_size=config.vae_batch_size) + 1) / 2).cpu())
    bar.close()
    return torch.cat(images)
