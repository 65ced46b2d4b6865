"""The settings of `scdpo baseline esd` and `scdpo baseline uce`, torch-free so that the command
line builds their flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from scdpo.baselines.common import split_concepts

VARIANTS = ("x", "u")

@dataclass
class ESDConfig:
    """What `scdpo baseline esd` erases, how it trains, and where it writes.

    Attributes:
        model: a local diffusers SD / SDXL pipeline folder, or "emojiworld".
        out: output folder: pytorch_lora_weights.safetensors and baseline.json.
        concepts: the concepts to erase, comma-separated (default: EmojiWorld's harmful concepts, or
            Safe Latent Diffusion's safety concepts for other models).
        variant: x (ESD-x: the cross-attention layers) or u (ESD-u: every other layer).
        iterations: optimiser steps (the authors: 200 for one concept with lr 5e-5, full weights).
        batch_size: samples per step, each with its own concept and noise (the authors: 1).
        lr: Adam learning rate of the LoRA.
        rank: LoRA rank.
        negative_guidance: eta, how far the target is pushed away from the concept (the authors'
            current code: 2; the paper: 1).
        start_guidance: classifier-free guidance scale when drawing x_t (the authors: 3).
        ddim_steps: DDIM steps of the schedule x_t is drawn on (the authors: 50).
        seed: seed of the concept, step and noise draws.
        device: torch device (default: cuda if available, else cpu).
        bf16: keep the frozen model in bfloat16 (the LoRA trains in float32).
        progress: show a progress bar.
        checkpoint_every: save the resumable state (``OUT/.esd-state``) every N steps; a rerun with
            the same settings continues from it and ends with the same LoRA. 0: never.
    """

    model: str
    out: str
    concepts: str | None = None
    variant: str = "x"
    iterations: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    rank: int = 8
    negative_guidance: float = 2.0
    start_guidance: float = 3.0
    ddim_steps: int = 50
    seed: int = 0
    device: str | None = None
    bf16: bool = False
    progress: bool = True
    checkpoint_every: int = 100

    def __post_init__(self):
        self.variant = self.variant.lower().removeprefix("esd-")
        if self.variant not in VARIANTS:
            raise ValueError(f"--variant must be x (cross-attention) or u (the rest), got {self.variant!r}")
        if min(self.iterations, self.batch_size, self.rank, self.ddim_steps) < 1 or self.lr <= 0 \
                or self.checkpoint_every < 0:
            raise ValueError("--iterations, --batch-size, --rank and --ddim-steps must be >= 1, --lr > 0 and "
                             "--checkpoint-every >= 0")
        split_concepts(self.concepts)


@dataclass
class UCEConfig:
    """What `scdpo baseline uce` edits and where it writes.

    Attributes:
        model: a local diffusers SD / SDXL pipeline folder, or "emojiworld".
        out: output folder: pytorch_lora_weights.safetensors (the edit as a LoRA) and baseline.json.
        concepts: the concepts to erase, comma-separated (default: EmojiWorld's harmful concepts, or
            Safe Latent Diffusion's safety concepts for other models).
        guide: the concept each erased one is moved to: one for all, or one per concept,
            comma-separated; "" (the default) is the empty prompt, as the authors' default.
        preserve: concepts whose keys and values must not move, comma-separated (default:
            EmojiWorld's safe concepts; none for other models); "none" for none.
        erase_scale: s_e, the weight of the erased concepts.
        preserve_scale: s_p, the weight of the preserved concepts.
        lamb: lambda, the ridge that keeps W near its old value (the authors' default 0.5).
        device: torch device (default: cuda if available, else cpu).
    """

    model: str
    out: str
    concepts: str | None = None
    guide: str = ""
    preserve: str | None = None
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    lamb: float = 0.5
    device: str | None = None

    def __post_init__(self):
        split_concepts(self.concepts)  # ValueError on an empty list
        if self.lamb <= 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise ValueError(f"--lamb must be > 0 and the scales >= 0, got {self.lamb}, {self.erase_scale}, "
                             f"{self.preserve_scale}")
