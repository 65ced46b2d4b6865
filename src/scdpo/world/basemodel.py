"""Architecture of the EmojiWorld base model: a miniature Stable Diffusion.

The shipped model is an ordinary diffusers ``StableDiffusionPipeline``: an ``AutoencoderKL`` with
downsampling factor 4 (64 px images <-> 16x16x4 latents), a ``UNet2DConditionModel`` with
cross-attention at the 8x8 and 4x4 levels only (attention over 256 tokens at 16x16 dominated the
CPU cost; see docs/base-model.md), and the real pretrained MiniLM-L6 (a transformers ``BertModel``,
384-d) as its frozen text encoder, with prompts padded to 32 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import AutoTokenizer, BertModel

from scdpo.world.minilm import minilm_path

#: Stable Diffusion's noise schedule, kept so the code path is SD 1.5's.
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                   prediction_type="epsilon")


@dataclass(frozen=True)
class BaseModelArch:
    """Shapes of the miniature SD. ``vae_channels`` has one entry per VAE level (factor 2^(n-1))."""

    image_size: int = 64
    vae_channels: tuple[int, ...] = (64, 128, 128)
    vae_layers: int = 2
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 224)
    unet_layers: int = 2
    attention_head_dim: int = 8
    max_text_tokens: int = 32

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor


#: A few-hundred-thousand-parameter version for tests and CPU smoke runs.
TINY_ARCH = BaseModelArch(vae_channels=(32, 32, 32), vae_layers=1, unet_channels=(32, 32, 64), unet_layers=1)


def make_vae(arch: BaseModelArch) -> AutoencoderKL:
    n = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=arch.vae_channels, layers_per_block=arch.vae_layers, sample_size=arch.image_size,
    )


def make_unet(arch: BaseModelArch, cross_attention_dim: int = 384) -> UNet2DConditionModel:
    n = len(arch.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=arch.latent_size, in_channels=arch.latent_channels, out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels, layers_per_block=arch.unet_layers,
        down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim,
        attention_head_dim=arch.attention_head_dim,
    )


def make_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SD_SCHEDULE)


def load_text_encoder(path: str | Path | None = None, max_tokens: int = 32, dtype=torch.float32):
    """MiniLM-L6 tokenizer (padded to ``max_tokens``) and frozen ``BertModel``."""
    path = Path(path) if path else minilm_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no text encoder at {path}")
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=max_tokens)
    encoder = BertModel.from_pretrained(path, torch_dtype=dtype, add_pooling_layer=False).requires_grad_(False).eval()
    return tokenizer, encoder


@torch.no_grad()
def encode_captions(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """Token states exactly as ``StableDiffusionPipeline.encode_prompt`` computes them for this
    encoder: padded to ``model_max_length``, truncated, no attention mask."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


def assemble_pipeline(vae, unet, tokenizer, text_encoder) -> StableDiffusionPipeline:
    """A plain diffusers pipeline from the parts (DPM-Solver++ for sampling, no safety checker)."""
    scheduler = DPMSolverMultistepScheduler(**SD_SCHEDULE, algorithm_type="dpmsolver++", steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def export_assets(unet_dir: str | Path, vae_dir: str | Path, out: str | Path, max_tokens: int = 32) -> Path:
    """Write the shipped-asset layout of the base model (see ``scdpo.models.registry``): a diffusers
    pipeline folder in fp16 *without* ``text_encoder/``, which the registry links in from the
    installed MiniLM package."""
    import shutil
    import tempfile

    out = Path(out)
    unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch.float16)
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float16)
    tokenizer, text_encoder = load_text_encoder(None, max_tokens)
    pipe = assemble_pipeline(vae, unet, tokenizer, text_encoder)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(Path(tmp) / "text_encoder")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
    return out
