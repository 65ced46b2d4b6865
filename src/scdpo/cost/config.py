"""The settings of `scdpo cost train` (:class:`CostTrainConfig`, with its augmentations'
:class:`AugmentConfig`), torch-free so that the command line builds their flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from scdpo.utils.config import nested

DEFAULT_BACKBONE = "efficientnet-lite0"

@dataclass
class AugmentConfig:
    """Strengths of each artifact (probability per image, and the range of its parameter).

    Attributes:
        p_flip: probability of a horizontal flip (emoji concepts are mirror-invariant).
        p_blur, blur_sigma: probability of a Gaussian blur, and its max sigma in pixels at 64 px.
        p_lowres, lowres_scale: probability of downsampling then upsampling, and the smallest scale.
        p_noise, noise_std: probability of additive Gaussian noise, and its max std.
        p_color, color_strength: probability of a colour shift (brightness, contrast, saturation,
            per-channel gain), and its strength (0.1 = gain within 0.9-1.1, +-0.1 brightness ...).
    """

    p_flip: float = 0.5
    p_blur: float = 0.5
    blur_sigma: float = 1.2
    p_lowres: float = 0.3
    lowres_scale: float = 0.5
    p_noise: float = 0.5
    noise_std: float = 0.05
    p_color: float = 0.8
    color_strength: float = 0.15


@dataclass
class CostTrainConfig:
    """Settings of one cost-model training run.

    Attributes:
        out: output folder: model.safetensors + config.json (the model), metrics.json, logs/.
        backbone: frozen image encoder: "efficientnet-lite0" (ImageNet weights, offline) or "clip:PATH".
        data: "emojiworld" (renders of ``suite``) or a user's labelled image folder / parquet file
            (columns image or path, label, category, severity; see docs/cost-model.md). Ignored
            with prompt_pairs.
        model: the text-to-image model to sample for prompt_pairs: a local diffusers SD / SDXL
            folder or "emojiworld".
        prompt_pairs: train from prompt pairs instead of labelled images: a CoProV2 train-pairs
            file (unsafe_prompt, safe_prompt), a CSV with prompt and safe_prompt, or an EmojiWorld
            suite (align-harmful, train: each harmful prompt's safe counterpart caption). The model
            draws each harmful prompt and its safe twin with one seed; the prompts are the labels.
        clean_prompts: prompt pairs only, optional: clean prompts (an EmojiWorld suite such as
            align-clean, or a prompt file such as COCO captions) whose images join the training set
            as certainly safe, up to ``pool`` of them (two by two, each two with one seed), so the
            model also sees clean scenes that are no harmful prompt's twin.
        anchor_judges: prompt pairs only: judges that must agree with a prompt's label before its
            image anchors the cost scale, where they cover its category (opennsfw, nudenet: sexual);
            none by default (every prompt label anchors).
        sample_steps, guidance_scale: prompt pairs only: the model's sampler steps and
            classifier-free guidance (the builder's defaults, so the cost model sees the images the
            builder will score).
        sample_batch_size: prompt pairs only: images per sampling batch.
        sample_dtype: prompt pairs only: the precision the model samples in, as the sampling commands'
            --dtype (SamplerConfig.dtype; "auto": bf16 on a CUDA GPU for a real model, TF32 there for
            EmojiWorld since 2026-12-06, else fp32). A precision other than fp32 is part of the image cache's
            key, so an EmojiWorld pair cache sampled on a GPU before then is read with "fp32" only.
        suite: EmojiWorld suite the training pool is drawn from.
        pool: EmojiWorld training images (scenes); prompt pairs: pairs sampled (two images
            each); user data uses every row not held out.
        harmful_fraction: fraction of harmful scenes in the EmojiWorld pool (the train suite
            itself has 0.2); scenes of the other class are skipped until it is reached.
        views: augmented copies of each pool image (each gets its own random artifacts).
        augment: apply the generator-artifact augmentations (blur, noise, colour shift ...).
        vae: VAE whose encode-decode round trip half of the pool goes through before the other
            augmentations (a VAE folder, a pipeline folder or "emojiworld"). "auto" (default): the
            shipped EmojiWorld base model's VAE for EmojiWorld renders, none for user data; "none":
            no round trip. Generated images come out of that decoder, so the cost model sees its
            softening in training (measured: docs/cost-model.md).
        image_size: render size of EmojiWorld scenes (the backbone resizes to its own input).
        eval_n: held-out renders per evaluation suite (eval-clean, eval-harmful-explicit, eval-mixed).
        val_fraction: user data and prompt pairs: fraction of rows (pairs) held out for metrics.
        ranking, anchor, category: enable the contrastive ranking, the cost anchoring and the
            category BCE objectives (for ablations; see docs/cost-model.md).
        category_weight: weight of the category BCE in the total loss.
        concept: enable the auxiliary concept objective (per-location concept logits, max-pooled,
            BCE against the render's concepts); EmojiWorld data only, ignored for user data.
        concept_weight: weight of the concept objective (a BCE summed over the 261 concepts).
        steps, batch_size, lr, weight_decay: adapter optimisation (AdamW, cosine decay to a tenth of lr).
        hidden, dropout: adapter width and dropout.
        tau: temperature of the log-sum-exp pooling of per-location costs (small: max, large: mean).
        feature_batch_size: images per backbone forward pass.
        render_device: where the EmojiWorld renders of the pool and the held-out sets are drawn and
            augmented: "backbone" (default: the backbone's device when it is a CUDA GPU, so they
            never wait on the CPU; the thirty-third round's profile had the renders at 11.4 s of the
            cost stage on one CPU thread; any other device renders on the CPU) or "cpu" (the same
            pixels on every machine; the only place before 2026-12-05). The two differ in
            floating-point rounding only (on a GPU cuDNN may also run the blur's convolution in TF32).
        cache: folder to cache pool and held-out features in (keyed by every setting that changes
            them), so ablations and re-runs skip the backbone; none by default.
        device: "auto" (the available accelerator, else CPU), "cpu", "cuda", "cuda:1", "mps" ...
        seed: seed of the pool, the augmentations and the adapter's initialisation; held-out
            renders use ``seed + 1``.
        progress: show tqdm progress bars.
        augmentation: strengths of the artifacts (an AugmentConfig; its fields are flags of
            `scdpo cost train`: --p-blur, --noise-std ...).
    """

    out: str
    backbone: str = DEFAULT_BACKBONE
    data: str = "emojiworld"
    model: str | None = None
    prompt_pairs: str | None = None
    clean_prompts: str | None = None
    anchor_judges: list[str] = field(default_factory=list)
    sample_steps: int = 20
    guidance_scale: float = 5.0
    sample_batch_size: int = 64
    sample_dtype: str = "auto"
    suite: str = "train"
    pool: int = 4000
    harmful_fraction: float = 0.5
    views: int = 1
    augment: bool = True
    vae: str | None = "auto"
    image_size: int = 64
    eval_n: int = 300
    val_fraction: float = 0.1
    ranking: bool = True
    anchor: bool = True
    category: bool = True
    category_weight: float = 0.5
    concept: bool = True
    concept_weight: float = 0.1
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    hidden: int = 256
    dropout: float = 0.5
    tau: float = 0.5
    feature_batch_size: int = 64
    render_device: str = "backbone"
    cache: str | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    augmentation: AugmentConfig = nested(AugmentConfig)

    def __post_init__(self):
        if not (self.ranking or self.anchor or self.category):
            raise ValueError("every objective is disabled: enable at least one of ranking, anchor, category")
        from scdpo.models.sampler_config import SAMPLING_DTYPES

        if self.sample_dtype not in SAMPLING_DTYPES:
            raise ValueError(f"unknown --sample-dtype {self.sample_dtype!r}; choose one of {', '.join(SAMPLING_DTYPES)}")
        if self.render_device not in ("backbone", "cpu"):
            raise ValueError(f"--render-device {self.render_device!r}: expected backbone (the backbone's device) or cpu")
        if not 0 < self.harmful_fraction < 1:
            raise ValueError(f"harmful_fraction must be in (0, 1), got {self.harmful_fraction}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0 (the log-sum-exp pooling divides by it), got {self.tau}")
        if self.concept_weight < 0:
            raise ValueError(f"concept_weight must be >= 0, got {self.concept_weight}")
        if self.views < 1 or self.steps < 0 or self.batch_size < 2:
            raise ValueError("views must be >= 1, steps >= 0 and batch_size >= 2")
        if self.clean_prompts and not self.prompt_pairs:
            raise ValueError("--clean-prompts adds clean images to --prompt-pairs training; give --prompt-pairs too")
        if bool(self.model) != bool(self.prompt_pairs):
            raise ValueError("--model and --prompt-pairs go together: give both to train from prompt pairs "
                             "(the model draws each pair), or neither to train on labelled images")
        from scdpo.cost.pairs import JUDGE_CATEGORIES

        for j in self.anchor_judges:
            if j not in JUDGE_CATEGORIES:
                raise ValueError(f"--anchor-judges {j}: unknown; expected {', '.join(JUDGE_CATEGORIES)}")
