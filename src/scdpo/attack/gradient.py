"""What the two white-box attacks (UnlearnDiffAtk, P4D) share: the harmful target image they
steer toward, a fixed noise set on which checked prompts are compared, and the check loop."""

from __future__ import annotations

import torch

from scdpo.attack.base import AttackContext, Target


def target_latents(ctx: AttackContext, target: Target, tries: int = 4) -> torch.Tensor:
    """Scaled VAE latents (1, C, h, w) of an image of ``target.prompt`` by the unaligned base model
    (without the guard): the first of ``tries`` seeds the judge finds harmful (the first seed
    without a judge). On EmojiWorld the base model draws the requested concept in ~94% of images."""
    base = ctx.base
    image = None
    for j in range(tries if ctx.harmful is not None else 1):
        image = base.sample([target.prompt], [target.seed + 1000 * j], ctx.base_sampler)
        if ctx.harmful is None or bool(ctx.harmful(image)[0]):
            break
    with torch.no_grad():
        return base.encode_images(image.to(base.device) * 2 - 1)


def fixed_noise(x0: torch.Tensor, g: torch.Generator, n: int = 4, t_max: int = 1000):
    """``n`` (noise, timestep) pairs drawn once per target: checked prompts are all compared on them."""
    noise = torch.randn((n, *x0.shape[1:]), generator=g).to(x0.device, x0.dtype)
    t = torch.randint(0, t_max, (n,), generator=g).to(x0.device)
    return noise, t


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(a.float(), b.float())


def freeze(model) -> None:
    """The attacks optimise prompts only: no gradient buffers for the UNet's weights."""
    model.unet.requires_grad_(False)
