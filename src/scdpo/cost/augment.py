"""Augmentations that mimic the artifacts of generated images, so a cost model trained on clean
renders still scores a diffusion model's samples: softness (blur, low resolution), sensor-like
noise and colour shifts, plus an optional round trip through the generator's own VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the config lives in a torch-free module (the command's flags are built without torch)
from scdpo.cost.config import AugmentConfig  # noqa: F401
from scdpo.models.speed import conv_layout


def _rand(n: int, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (sigma (B,) in pixels; 0 = unchanged) as one grouped conv."""
    b, c, h, w = x.shape
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).to(x.dtype))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply random artifacts to a batch in [0, 1] (B, 3, H, W); returns a new tensor in [0, 1].
    Random draws come from ``generator`` (CPU), so a pool is reproducible from its seed."""
    x = images.float().clone()
    b, _, h, w = x.shape
    dev = x.device

    def pick(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) < p).to(dev)

    flip = pick(cfg.p_flip)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    lowres, scale = pick(cfg.p_lowres), _rand(b, generator, cfg.lowres_scale, 1.0)
    if lowres.any():
        for i in torch.nonzero(lowres).flatten().tolist():
            small = F.interpolate(x[i:i + 1], scale_factor=float(scale[i]), mode="bilinear", antialias=True)
            x[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    sigma = _rand(b, generator, 0.3, cfg.blur_sigma) * (h / 64) * pick(cfg.p_blur).cpu()
    if (sigma > 0).any():
        x = _blur(x, sigma)
    color = pick(cfg.p_color)[:, None, None, None]
    s = cfg.color_strength
    gain = 1 + _rand(b * 3, generator, -s, s).view(b, 3, 1, 1).to(dev)
    bright = _rand(b, generator, -s, s).view(b, 1, 1, 1).to(dev) * 0.7
    contrast = 1 + _rand(b, generator, -s, s).view(b, 1, 1, 1).to(dev) * 1.5
    sat = 1 + _rand(b, generator, -s, s).view(b, 1, 1, 1).to(dev) * 2
    gray = x.mean(1, keepdim=True)
    mean = x.mean((1, 2, 3), keepdim=True)
    shifted = ((gray + sat * (x - gray) - mean) * contrast + mean) * gain + bright
    x = torch.where(color, shifted, x)
    noise = _rand(b, generator, 0.0, cfg.noise_std).to(dev) * pick(cfg.p_noise)
    x = x + noise.view(b, 1, 1, 1) * torch.randn(x.shape, generator=generator).to(dev)
    return x.clamp(0, 1)


def load_vae(name_or_path: str, device: str | torch.device = "cpu"):
    """A diffusers ``AutoencoderKL`` from a VAE folder, a pipeline folder (its ``vae/``) or a
    registry name such as ``emojiworld``."""
    from diffusers import AutoencoderKL

    from scdpo.models.registry import resolve_model_path

    path = resolve_model_path(name_or_path)
    sub = "vae" if (path / "vae" / "config.json").is_file() else None
    if sub is None and not (path / "config.json").is_file():
        raise FileNotFoundError(f"no VAE at {path} (neither config.json nor vae/config.json)")
    vae = AutoencoderKL.from_pretrained(path, subfolder=sub).to(device).eval().requires_grad_(False)
    # channels-last on the CPU: the same outputs up to float32 rounding, 1.09x the round trip there
    return vae.to(memory_format=conv_layout(device))


@torch.no_grad()
def vae_roundtrip(images: torch.Tensor, vae) -> torch.Tensor:
    """Encode to the VAE's latent mean and decode: the exact softening a generator's decoder adds."""
    dev = next(vae.parameters()).device
    x = (images.to(dev) * 2 - 1).contiguous(memory_format=conv_layout(dev))
    latents = vae.encode(x).latent_dist.mode()
    return ((vae.decode(latents).sample + 1) / 2).clamp(0, 1).to(images.device).contiguous()
