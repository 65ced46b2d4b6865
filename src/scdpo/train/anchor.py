"""The safe anchor (our addition to SC-DPO; docs/method.md, "Safe anchor").

On harmful prompts, preference training alone learns to *destroy* the harmful object: Diffusion-DPO
raises the policy's error on the loser, and the cheapest way is to turn any state that starts to
look like the harmful sprite into a smear (docs/results.md, fourth round: 40-70% of harmful prompts
drew no object at all). The anchor gives the harmful prompt a target instead:

``A = || eps_theta(x, t, c_harm) - sg[eps_ref(x, t, c_safe)] ||^2``   (mean over latent elements)

with ``c_safe`` the prompt's minimally edited safe counterpart (the dataset's ``safe_caption``,
CoProV2-style) and ``eps_ref`` the frozen base model. Minimising ``A`` on every state the sampler
visits makes the policy's sampling trajectory under ``c_harm`` the base model's under ``c_safe``,
which draws a good safe object. It is the model-based target of Concept Ablation (Kumari et al.
2023, with the counterpart as the anchor concept) measured on ESD's states (Gandikota et al. 2023:
the policy's own sampling trajectory, stopped at a random step), which are the states evaluation
sampling visits; ``anchor_states="winner"`` uses the pair's noisy winner instead (off-policy).
The trainer adds ``q * (beta/2) * sum(A) / B`` to the loss, the scale of the winner term.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from scdpo.models.t2i import Conditioning, T2IModel

__all__ = ["AnchorInputs", "anchor_inputs", "anchor_rows", "policy_states"]


class AnchorInputs(NamedTuple):
    """The anchor's states ``x`` at timesteps ``t`` (n,), the harmful prompts' conditioning the
    policy predicts under, and the reference's prediction under the safe prompts (the target)."""

    x: torch.Tensor
    t: torch.Tensor
    cond: Conditioning
    target: torch.Tensor


def anchor_rows(batch: dict) -> list[int]:
    """Rows of ``batch`` that are harmful pairs with a safe counterpart prompt."""
    safe = batch.get("safe_caption") or [""] * len(batch["caption"])
    return [i for i, (h, s) in enumerate(zip(batch["harmful"], safe)) if bool(h) and s]


@torch.no_grad()
def policy_states(model: T2IModel, policy, cond: Conditioning, gen: torch.Generator, steps: int,
                  guidance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the policy's guided DPM-Solver++ trajectory under ``cond`` (fresh noise from
    ``gen``), stopped before step ``k`` (uniform in 0..steps-1, one ``k`` per batch, as the scheduler
    steps a batch together): returns ``(x_k, t_k)`` with ``t_k`` repeated per sample."""
    from scdpo.models.sampling import make_scheduler
    from scdpo.train.model import using_unet

    n = len(cond)
    scheduler = make_scheduler("dpmsolver++", model.scheduler_config, model.family)
    scheduler.set_timesteps(steps, device=model.device)
    k = int(torch.randint(steps, (1,), generator=gen))
    side = model.resolution // model.vae_scale_factor
    lat = torch.randn((n, model.latent_channels, side, side), generator=gen).to(model.device, model.dtype)
    lat = lat * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    both = Conditioning.cat([model.unconditional(n), cond]) if guidance > 1 else cond
    with using_unet(model, policy):
        for t in scheduler.timesteps[:k]:
            x = scale(torch.cat([lat, lat]) if guidance > 1 else lat, t)
            pred = model.predict(x, t, both)
            if guidance > 1:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance * (text - uncond)
            lat = scheduler.step(pred, t, lat, return_dict=False)[0]
    t = scheduler.timesteps[k]
    return scale(lat, t), t.reshape(1).repeat(n).to(model.device)


@torch.no_grad()
def anchor_inputs(cfg, model: T2IModel, policy, reference, batch: dict, gen: torch.Generator,
                  winners: torch.Tensor | None = None) -> AnchorInputs | None:
    """The anchor's inputs for ``batch`` (None when it holds no harmful pair with a safe prompt).
    ``cfg``: TrainConfig (anchor_states, anchor_steps, anchor_guidance); ``winners``: the batch's
    winner latents, needed for ``anchor_states="winner"``."""
    rows = anchor_rows(batch)
    if not rows:
        return None
    cond = model.encode_prompts([batch["caption"][i] for i in rows])
    safe = model.encode_prompts([batch["safe_caption"][i] for i in rows])
    if cfg.anchor_states == "policy":
        x, t = policy_states(model, policy, cond, gen, cfg.anchor_steps, cfg.anchor_guidance)
    else:
        x0 = winners[torch.as_tensor(rows, device=winners.device)]
        noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        t = model.sample_timesteps(len(rows), gen).to(model.device)
        x = model.add_noise(x0, noise, t)
    return AnchorInputs(x, t, cond, reference(model, x, t, safe).float())
