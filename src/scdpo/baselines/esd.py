"""ESD (Gandikota et al., ICCV 2023, "Erasing Concepts from Diffusion Models"): fine-tune the UNet
so that, conditioned on a concept c, it predicts the frozen model's noise *negatively* guided away
from c:

    eps_theta(x_t, c, t)  ->  eps*(x_t, c, t) - eta (eps*(x_t, c, t) - eps*(x_t, t))

with eps* the frozen base model, eta the negative guidance, and x_t drawn by running the base model
with classifier-free guidance (scale 3) on c for a random number of the 50 DDIM steps (the
authors' current esd_sd.py). ESD-x trains the cross-attention layers (attn2), ESD-u every other
layer (here every other Linear layer, see :func:`esd_targets`). The trained weights are a LoRA on
exactly those layers (the authors fine-tune them in full); several concepts are erased at once by
drawing one per sample.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scdpo.baselines.common import split_concepts, write_record
# the config lives in a torch-free module (the command's flags are built without torch)
from scdpo.baselines.config import VARIANTS, ESDConfig  # noqa: F401



def esd_targets(unet, variant: str) -> list[str]:
    """Names of the Linear modules ESD-``variant`` trains: those inside a cross-attention (attn2)
    for x, all others for u (the authors' rule, which also trains the u variant's Conv2d layers:
    left out here because diffusers 0.42's ``load_lora_weights`` silently drops the self-attention
    LoRA weights of a LoRA that mixes Conv2d and Linear layers; measured on the tiny pipeline)."""
    names = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and n]
    return [n for n in names if ("attn2" in n) == (variant == "x")]


def esd_target(model, x_t, t, cond, uncond, eta: float) -> torch.Tensor:
    """eps*(c) - eta (eps*(c) - eps*()) of the frozen model (called with the adapters off)."""
    e = model.predict(torch.cat([x_t, x_t]), t, type(cond).cat([cond, uncond])).float()
    e_c, e_null = e.chunk(2)
    return e_c - eta * (e_c - e_null)


def draw_xt(model, cond, uncond, noise, scheduler, till: int, guidance: float) -> torch.Tensor:
    """x at ``scheduler.timesteps[till]``: the frozen model's guided DDIM run on ``cond`` for ``till`` steps."""
    from scdpo.models.t2i import Conditioning

    latents, both = noise * scheduler.init_noise_sigma, Conditioning.cat([uncond, cond])
    for t in scheduler.timesteps[:till]:
        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        u, c = model.predict(x, t, both).chunk(2)
        latents = scheduler.step(u + guidance * (c - u), t, latents, return_dict=False)[0]
    return latents


def train_esd(model, concepts: list[str], cfg: ESDConfig, resume_dir: str | Path | None = None) -> list[float]:
    """Add the LoRA of ESD-``cfg.variant`` to ``model.unet`` and train it; returns the losses.
    With ``resume_dir``, its saved state is loaded first and saved every ``cfg.checkpoint_every`` steps."""
    from scdpo.baselines.state import load_state, save_state
    from scdpo.models.sampling import make_scheduler
    from scdpo.train.model import Reference, add_lora

    unet = model.unet
    with torch.random.fork_rng(devices=[]):  # the LoRA's random init from cfg.seed: reruns are identical
        torch.manual_seed(cfg.seed)
        add_lora(unet, cfg.rank, cfg.rank, esd_targets(unet, cfg.variant))
    base = Reference(unet, full=False, dtype=model.dtype)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    rng = random.Random(cfg.seed)
    settings = {**asdict(cfg), "concepts": concepts, "out": None, "device": None, "progress": None}
    losses, first = [], 0
    loaded = load_state(resume_dir, settings, params, optimizer) if resume_dir is not None else None
    if loaded is not None:
        first, state, losses = loaded
        rng.setstate((state[0], tuple(state[1]), state[2]))
    scheduler = make_scheduler("ddim", model.scheduler_config)
    scheduler.set_timesteps(cfg.ddim_steps, device=model.device)
    res = model.resolution // model.vae_scale_factor
    for step in tqdm(range(first, cfg.iterations), desc=f"ESD-{cfg.variant}", unit="step", initial=first,
                     total=cfg.iterations, disable=not cfg.progress):
        prompts = [rng.choice(concepts) for _ in range(cfg.batch_size)]
        till = rng.randrange(cfg.ddim_steps)
        noise = torch.stack([torch.randn((model.latent_channels, res, res),
                                         generator=torch.Generator().manual_seed(rng.randrange(2**31)))
                             for _ in prompts]).to(model.device, model.dtype)
        cond, uncond = model.encode_prompts(prompts), model.unconditional(len(prompts))
        t = scheduler.timesteps[till]
        with torch.no_grad(), base.active(model):
            x_t = draw_xt(model, cond, uncond, noise, scheduler, till, cfg.start_guidance)
            target = esd_target(model, x_t, t, cond, uncond, cfg.negative_guidance)
        loss = torch.nn.functional.mse_loss(model.predict(x_t, t, cond).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise ValueError(f"ESD loss is {losses[-1]} at step {len(losses)}; lower --lr")
        if resume_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < cfg.iterations:
            save_state(resume_dir, settings, step + 1, params, optimizer, rng.getstate(), losses)
    unet.eval()
    return losses


def run(cfg: ESDConfig) -> Path:
    from scdpo.baselines.state import clear_state
    from scdpo.models.guards.base import default_concepts
    from scdpo.models.t2i import T2IModel
    from scdpo.train.model import save_lora

    start = time.time()
    model = T2IModel.from_pretrained(cfg.model, device=cfg.device,
                                     dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    concepts = split_concepts(cfg.concepts) or default_concepts(model)
    losses = train_esd(model, concepts, cfg, resume_dir=cfg.out)
    path = save_lora(model.unet, cfg.out, model.family)
    clear_state(cfg.out)
    tail = losses[-max(1, len(losses) // 10):]
    write_record(cfg.out, {"method": f"esd-{cfg.variant}", "settings": asdict(cfg), "concepts": concepts,
                           "loss_first": losses[0], "loss_last_tenth": sum(tail) / len(tail),
                           "seconds": round(time.time() - start, 2)})
    print(f"ESD-{cfg.variant}: {cfg.iterations} steps on {len(concepts)} concepts in {time.time() - start:.1f} s; "
          f"loss {losses[0]:.4g} -> {sum(tail) / len(tail):.4g}; LoRA in {path}")
    return path
