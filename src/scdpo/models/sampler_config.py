"""How images are sampled (:class:`SamplerConfig`): a torch-free module, so that every command
that nests it in its config builds its flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULERS = ("dpmsolver++", "ddim", "euler")


@dataclass
class SamplerConfig:
    """How :meth:`T2IModel.sample` generates images.

    Attributes:
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
        guard: an inference-time safety guard (:mod:`scdpo.models.guards`): ``"sld:weak|medium|strong|max"``
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
        from scdpo.models.guards import get_guard

        get_guard(self.guard)  # ValueError naming an unknown guard or option
