"""Seeded, batched classifier-free-guidance sampling for :class:`scdpo.models.t2i.T2IModel`.

Each image's initial noise comes from its own CPU ``torch.Generator().manual_seed(seed)``, so an
image depends only on (prompt, seed, config): not on which other prompts share its batch, nor on
the device (up to floating point differences of the device's kernels).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

# the config lives in a torch-free module, so that commands build their flags without importing torch
from scdpo.models.sampler_config import SCHEDULERS, SamplerConfig, auto_batch

if TYPE_CHECKING:
    from scdpo.models.t2i import T2IModel


def free_bytes(device) -> int | None:
    """A CUDA device's memory free for a batch (what torch holds cached counts as free); None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


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
        # the whole denoiser and the VAE's decoder (issue 16 asks for the decode compiled too): at SD scale
        # 1.42x diffusers' pipeline against 1.38x for their blocks, on the best eager settings (forty-third
        # round); lazily, at the first call, so nothing compiles that this call does not run; for this call only
        for module in (model.unet, getattr(model.vae, "decoder", model.vae)):
            stack.enter_context(speed.compiled(module))
    return stack


def batch_sizes(model: T2IModel, config: SamplerConfig) -> tuple[int, int]:
    """(images per UNet batch, images per decoder call) with which :func:`sample_images` samples ``config`` on
    ``model`` (:func:`~scdpo.models.sampler_config.auto_batch` at the config's latent size)."""
    factor = model.vae_scale_factor
    latent_hw = ((config.height or model.resolution) // factor, (config.width or model.resolution) // factor)
    return auto_batch(config, model.device.type, latent_hw, free_bytes(model.device))


def _padded_predict(predict, n: int, full: int, x: torch.Tensor, t, cond):
    """``predict`` of a batch of ``n`` images (``len(x)`` rows: 1, 2 or a guard's k a image) padded to the rows of
    ``full`` images (:meth:`~scdpo.models.t2i.T2IModel.predict`'s ``rows``)."""
    return predict(x, t, cond, rows=len(x) // n * full)


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
    from scdpo.models.graphs import GraphedPredict
    from scdpo.models.guards import get_guard

    guard = get_guard(config.guard)
    # the denoiser's calls, from CUDA graphs with cuda_graphs (off the GPU: model.predict itself)
    # (unpadded: a call's batch sizes are fixed; a failure is remembered on the model, not met again per call)
    graphed = config.cuda_graphs and not getattr(model, "cuda_graphs_failed", False)
    predict = GraphedPredict(model, pad=False) if graphed else model.predict
    height, width = config.height or model.resolution, config.width or model.resolution
    factor = model.vae_scale_factor
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not a multiple of {factor}, the VAE downsampling "
                         f"factor of this model (its native resolution is {model.resolution})")
    batch_size, vae_batch_size = batch_sizes(model, config)
    images = [torch.empty(0, 3, height, width)]
    # counts denoising steps, not batches: a 64-image batch is minutes on a CPU, a step seconds
    bar = tqdm(total=-(-len(prompts) // batch_size) * config.steps, desc=f"sampling {len(prompts)} images",
               unit="step", disable=not config.progress, leave=False)
    # compiled (static shapes), a call's last, shorter batch is padded to the full one and its decoder chunks to
    # one size: one graph each, where every new size would compile again (about 46 s at SD scale)
    decode_rows = min(vae_batch_size, batch_size) if config.compile else vae_batch_size
    start = 0
    while start < len(prompts):
        n = min(batch_size, len(prompts) - start)
        if config.compile:
            predict = functools.partial(_padded_predict, model.predict, n, batch_size)
        latents = decoded = None
        try:
            latents = _denoise(model, prompts, seeds, start, n, config, guard, predict, (height, width), bar)
        except torch.cuda.OutOfMemoryError:  # compiled, the batch ran padded to the full size
            batch_size = _halved(batch_size if config.compile else n, "UNet batch", model.device)
        if latents is None:  # out of memory: this batch again in halves (each image keeps its own seed)
            if graphed:  # the graphs recorded at the old size hold their memory pools: dropped with them
                predict = GraphedPredict(model, pad=False)
            _release(model.device)
            decode_rows = min(decode_rows, batch_size)
            bar.total = bar.n + -(-(len(prompts) - start) // batch_size) * config.steps
            continue
        while decoded is None:
            try:
                decoded = model.decode_latents(latents, batch_size=decode_rows, pad=config.compile)
            except torch.cuda.OutOfMemoryError:  # the latents are kept: only the decoder's calls get smaller
                rows = decode_rows if config.compile else min(decode_rows, len(latents))
                decode_rows = _halved(rows, "VAE decoder call", model.device)
            if decoded is None:
                _release(model.device)
        images.append(((decoded + 1) / 2).cpu())
        start += n
    bar.close()
    if graphed and predict.failed:
        model.cuda_graphs_failed = True  # warned once: later sample() calls on this model run eagerly
    return torch.cat(images)


def _halved(size: int, what: str, device) -> int:
    """The next size to try after a CUDA out-of-memory error at ``size`` images a ``what``, with a warning; at one
    image the error stands (raised from the ``except`` block this is called in). The sampler picks its
    batch from the memory free when a command starts (:func:`batch_sizes`), so commands that start together on one
    GPU each see it empty: six EmojiWorld evaluations with ``--fill-batches`` ran one of them out of memory in the
    decoder (docs/performance.md, "Full batches across suites")."""
    if size <= 1:
        raise  # noqa: PLE0704 - re-raises the out-of-memory error being handled
    import warnings

    warnings.warn(f"CUDA out of memory at {size} images a {what} on {device}; going on at {size // 2} "
                  f"(the same images: each keeps its own seed). Pass a smaller --batch-size to start there",
                  RuntimeWarning, stacklevel=3)
    return size // 2


def _release(device) -> None:
    """Return what a failed batch held to the GPU (after its ``except`` block, whose traceback kept it alive)."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _denoise(model: T2IModel, prompts: list[str], seeds: list[int], start: int, n: int, config: SamplerConfig,
             guard, predict, size: tuple[int, int], bar) -> torch.Tensor:
    """The denoised latents of the ``n`` images from ``start``: classifier-free guidance (or the config's guard)
    over ``config.steps`` of its scheduler, from each image's own seeded noise."""
    from scdpo.models.conditioning import Conditioning

    batch = prompts[start:start + n]
    guided = config.guidance_scale > 1.0
    cond = text = model.encode_prompts(batch, size=size)
    uncond = None
    if guided:
        neg = config.negative_prompt
        neg = neg[start:start + n] if isinstance(neg, list) else neg
        uncond = model.unconditional(n, neg, size=size)
        cond = Conditioning.cat([uncond, cond])
    run = guard.start(model, batch, text, uncond, config) if guard is not None else None
    factor = model.vae_scale_factor
    latent_shape = (model.latent_channels, size[0] // factor, size[1] // factor)
    noise = torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(seed)))
                         for seed in seeds[start:start + n]])
    scheduler = make_scheduler(config.scheduler, model.scheduler_config, model.family)
    scheduler.set_timesteps(config.steps, device=model.device)
    # flow-matching schedulers start at unit noise and take the model input as is
    latents = noise.to(model.device, model.dtype) * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    for i, t in enumerate(scheduler.timesteps):
        if run is not None:  # a guard chooses the conditionings and how they combine
            c = run.conditioning(i)
            x = scale(latents.repeat(len(c) // len(latents), 1, 1, 1), t)
            latents = scheduler.step(run.combine(i, predict(x, t, c)), t, latents, return_dict=False)[0]
            bar.update(1)
            continue
        x = scale(torch.cat([latents, latents]) if guided else latents, t)
        pred = predict(x, t, cond)
        if guided:
            uncond_pred, cond_pred = pred.chunk(2)
            pred = uncond_pred + config.guidance_scale * (cond_pred - uncond_pred)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        bar.update(1)
    return latents
