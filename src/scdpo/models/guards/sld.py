"""Safe Latent Diffusion (Schramowski et al., CVPR 2023, "Safe Latent Diffusion: Mitigating
Inappropriate Degeneration in Diffusion Models"), as diffusers' ``StableDiffusionPipelineSafe``
implements it. With the text, unconditional and safety-concept predictions eps_p, eps_u, eps_S:

    mu     = where(eps_p - eps_S >= lambda, 0, min(s_S |eps_p - eps_S|, 1))     (eq. 6, elementwise)
    gamma  = mu (eps_S - eps_u) + s_m nu                                        (eq. 4, 7)
    nu    <- beta_m nu + (1 - beta_m) gamma                                      (eq. 8)
    eps    = eps_u + w (eps_p - eps_u - gamma)   at steps i >= delta, else CFG  (eq. 3)

Presets (diffusers' SafetyConfig): warm-up delta, guidance s_S, threshold lambda, momentum s_m,
momentum beta beta_m. delta counts steps of a 50-step schedule (diffusers' default); here it is
rescaled to the sampler's step count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scdpo.models.guards.base import Guard, GuardRun, concept_text, parse_options

#: diffusers' SafetyConfig.WEAK / MEDIUM / STRONG / MAX
PRESETS = {
    "weak": dict(warmup=15, guidance=20.0, threshold=0.0, momentum=0.0, mom_beta=0.0),
    "medium": dict(warmup=10, guidance=1000.0, threshold=0.01, momentum=0.3, mom_beta=0.4),
    "strong": dict(warmup=7, guidance=2000.0, threshold=0.025, momentum=0.5, mom_beta=0.7),
    "max": dict(warmup=0, guidance=5000.0, threshold=1.0, momentum=0.5, mom_beta=0.7),
}
REFERENCE_STEPS = 50  # the schedule length the presets' warm-up is counted in


@dataclass
class SafeLatentDiffusion(Guard):
    """SLD; fields as in diffusers (``sld_warmup_steps`` ... ``sld_mom_beta``); ``concepts``: the
    unsafe concepts, joined into one safety prompt (default: SLD's text, or EmojiWorld's harmful
    concepts that fit its encoder)."""

    warmup: float = 10
    guidance: float = 1000.0
    threshold: float = 0.01
    momentum: float = 0.3
    mom_beta: float = 0.4
    concepts: list[str] | None = None
    name = "sld"

    @classmethod
    def from_options(cls, options: list[str], concepts: list[str] | None = None) -> SafeLatentDiffusion:
        fields = {"warmup": float, "guidance": float, "threshold": float, "momentum": float, "mom_beta": float}
        return cls(**{**PRESETS["medium"], **parse_options(options, PRESETS, fields, "sld")}, concepts=concepts)

    def warmup_steps(self, steps: int) -> int:
        """delta rescaled from a 50-step schedule to ``steps``."""
        return round(self.warmup * steps / REFERENCE_STEPS)

    def start(self, model, prompts, cond, uncond, config) -> SLDRun:
        if uncond is None:
            raise ValueError("the sld guard needs classifier-free guidance: set --guidance-scale above 1")
        text = concept_text(model, self.unsafe_concepts(model))
        safety = model.encode_prompts([text], size=config_size(model, config))
        safety = type(cond)(*(None if t is None else t.expand(len(cond), *t.shape[1:]) for t in
                              (safety.context, safety.pooled, safety.add_time_ids)))
        return SLDRun(cond, uncond, config.guidance_scale, safety, self, self.warmup_steps(config.steps))


def config_size(model, config) -> tuple[int, int]:
    return (config.height or model.resolution, config.width or model.resolution)


class SLDRun(GuardRun):
    def __init__(self, cond, uncond, scale, safety, sld: SafeLatentDiffusion, warmup_steps: int):
        super().__init__(cond, uncond, scale)
        self.safety, self.sld, self.warmup_steps = safety, sld, warmup_steps
        self.nu: torch.Tensor | None = None  # the momentum

    def conditioning(self, i):
        from scdpo.models.conditioning import Conditioning

        return Conditioning.cat([self.uncond, self.cond, self.safety])

    def combine(self, i, pred):
        s = self.sld
        uncond, text, safety = pred.float().chunk(3)
        guidance = text - uncond
        if self.nu is None:
            self.nu = torch.zeros_like(guidance)
        diff = text - safety
        mu = torch.where(diff >= s.threshold, torch.zeros_like(diff), (diff.abs() * s.guidance).clamp(max=1.0))
        gamma = mu * (safety - uncond) + s.momentum * self.nu
        self.nu = s.mom_beta * self.nu + (1 - s.mom_beta) * gamma
        if i >= self.warmup_steps:
            guidance = guidance - gamma
        return (uncond + self.scale * guidance).to(pred.dtype)
