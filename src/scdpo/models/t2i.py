"""The one interface through which scdpo talks to a text-to-image diffusion model.

:class:`T2IModel` wraps the components of a local diffusers ``StableDiffusionPipeline``,
``StableDiffusionXLPipeline`` or ``StableDiffusion3Pipeline`` folder (or the shipped ``emojiworld``
model); what differs between those families is in :mod:`scdpo.models.families`. It and offers what
preference-pair sampling, Diffusion-DPO training and evaluation need: prompt encoding (cached),
the forward noising process and its regression target, the UNet prediction, VAE encode/decode,
seeded batched sampling (see :mod:`scdpo.models.sampling`) and saving back to a diffusers folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError

from scdpo.models import speed
from scdpo.models.conditioning import Conditioning
from scdpo.models.families import FAMILIES, family_of_pipeline
from scdpo.models.rows import pad_to, padded_rows
from scdpo.models.registry import resolve_model_path
from scdpo.models.sampler_config import sampling_dtype
from scdpo.models.sampling import SamplerConfig, sample_images
from scdpo.utils.logs import drop_records

#: SamplerConfig.dtype's names (and `scdpo ... --dtype`'s) -> torch dtypes
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["Conditioning", "SamplerConfig", "T2IModel"]


def _has_text_encoder_keys(file: Path) -> bool:
    """Whether a diffusers LoRA file adapts a text encoder (its keys start with ``text_encoder``)."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        return any(k.startswith(("text_encoder", "lora_te")) for k in f.keys())


class T2IModel:
    """A Stable Diffusion (``family="sd"``), SDXL (``"sdxl"``) or SD3 (``"sd3"``) model;
    ``adapter`` is the family's :class:`scdpo.models.families.Family`.

    ``unet`` is the denoiser (SD3's ``SD3Transformer2DModel`` too: one name for the trainer).
    Text encoders and VAE are frozen (``requires_grad=False``); the denoiser is left trainable.
    ``noise_scheduler`` is the forward process (a ``DDPMScheduler`` with the model's betas and
    prediction type; SD3: its flow-matching scheduler); samplers are built from
    ``scheduler_config`` (the folder's scheduler).
    """

    prompt_cache_size = 4096
    #: prompts a text-encoder call, by device type (others: "cpu"'s). On a GPU a small encoder's call is
    #: launch-bound: the EmojiWorld eval's 1,610 prompts took 27 calls of 64, 1.15 s of its 5.9 s under
    #: cProfile on an H100 (thirty-sixth round); 256 makes them 7. SD3's T5-XXL holds about three
    #: (256, 256, 10240) tensors in its gated FFN: about 4 GB in bf16 (a reviewer's count). Another batch can
    #: round a GPU's matmuls otherwise in the last bits: the thirty-seventh round's eval (512 a call) moved no rate
    #: further from today's settings than the defaults before it (0.27 points).
    text_batch_size = {"cpu": 64, "cuda": 256}

    def __init__(self, pipeline, *, device=None, dtype: torch.dtype = torch.float32):
        adapter = family_of_pipeline(type(pipeline).__name__)
        if adapter is None:  # a subclass of a known pipeline
            adapter = next((f for f in FAMILIES.values() if isinstance(pipeline, f.pipeline_cls())), None)
        if adapter is None:
            raise ValueError(f"{type(pipeline).__name__} is not a supported model family ({', '.join(FAMILIES)})")
        self.adapter = adapter
        self.family = adapter.name
        self.pad_rows = False  # predict's batches padded to a power of two (see predict)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        self.unet, self.vae = getattr(pipeline, adapter.denoiser), pipeline.vae
        self.tokenizers = [getattr(pipeline, tok) for tok, _ in adapter.text_components]
        self.text_encoders = [getattr(pipeline, enc) for _, enc in adapter.text_components]
        self.force_zeros_for_empty_prompt = bool(
            adapter.force_zeros_for_empty_prompt and pipeline.config.get("force_zeros_for_empty_prompt", True)
        )
        self.scheduler = pipeline.scheduler  # the folder's own scheduler, kept for save_pretrained
        self.scheduler_config = pipeline.scheduler.config
        self.noise_scheduler = adapter.noise_scheduler(self.scheduler_config)
        self.prediction_type = adapter.prediction_type(self.noise_scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = self.unet.config.sample_size
        self.resolution = int(size if isinstance(size, int) else size[0]) * self.vae_scale_factor
        self.latent_channels = self.vae.config.latent_channels
        for module in [self.vae, *self.text_encoders]:
            if module is not None:
                module.requires_grad_(False)
        self._prompt_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self.to(self.device, dtype)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, *, device=None,
                        dtype: torch.dtype = torch.float32) -> T2IModel:
        """Load a local SD / SDXL / SD3 diffusers pipeline folder, or a registered name (``"emojiworld"``)."""
        import diffusers

        folder = resolve_model_path(path_or_name)
        index = folder / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"{str(folder)!r} is not a diffusers pipeline folder (it has no model_index.json)"
            )
        try:
            model_index = json.loads(index.read_text())
            class_name = model_index.get("_class_name")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{str(folder)!r} has an unreadable model_index.json: {err}") from err
        adapter = family_of_pipeline(class_name)
        if adapter is None:
            raise ValueError(
                f"{str(folder)!r} holds a {class_name!r}, an unsupported model family; pass a diffusers "
                f"folder of SD 1.x/2.x, SDXL or SD3 (supported pipelines: "
                f"{', '.join(f.pipeline_class for f in FAMILIES.values())})"
            )
        pipe_cls, kwargs = adapter.pipeline_cls(), adapter.load_kwargs()
        # diffusers renamed ``torch_dtype`` to ``dtype`` (0.42); older versions only know the former
        major, minor = (int(x) for x in diffusers.__version__.split(".")[:2])
        kwargs["dtype" if (major, minor) >= (0, 42) else "torch_dtype"] = dtype
        # a missing component or a truncated weights file is the folder's fault, not a bug: one line
        # naming it (diffusers raises a bare OSError deep inside from_pretrained)
        for name, value in model_index.items():
            if (not name.startswith("_") and name not in kwargs and isinstance(value, list) and value[0]
                    and not (folder / name).is_dir()):
                raise ValueError(f"{str(folder)!r} has no {name}/ folder, which its model_index.json lists; "
                                 "the pipeline folder is incomplete: copy or export it whole")
        # a MiniLM (BertModel) text encoder, as EmojiWorld's, is ours and works: diffusers' type
        # check knows only CLIP's classes and would warn on every load
        bert = model_index.get("text_encoder") == ["transformers", "BertModel"]
        try:
            with drop_records("diffusers.pipelines.pipeline_utils",
                              *(["Expected types for text_encoder:"] if bert else [])):
                pipeline = pipe_cls.from_pretrained(folder, **kwargs)
        except (OSError, RuntimeError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot load the model in {str(folder)!r}: {first} (a missing, truncated or damaged "
                             "file: copy or export the pipeline folder again)") from err
        return cls(pipeline, device=device, dtype=dtype)

    @classmethod
    def for_sampling(cls, path_or_name: str | os.PathLike, config: SamplerConfig | None = None, *, device=None,
                     lora: str | os.PathLike | None = None, lora_scale: float = 1.0) -> T2IModel:
        """The model as the sampling commands (generate, eval, data build, data mine, cost train's prompt
        pairs) load it: in the precision ``config.dtype`` means here
        (:func:`scdpo.models.sampler_config.sampling_dtype`; "auto": bf16 on CUDA for a real model, TF32 on
        CUDA for EmojiWorld, fp32 on the CPU), with ``lora`` fused at ``lora_scale`` (:meth:`load_lora`).

        Loaded in fp32 and cast once at the end: a LoRA fused into bf16 weights would lose every update
        below half a bf16 step of its weight (a reviewer measured a LoRA of 5e-4 of the weights' size keep
        43% of its effect so, about all of it fused first), and a ``force_upcast`` VAE, cast back to fp32
        by :meth:`to`, keeps its own weights rather than their bf16 rounding. The fp32 copy is made in host
        memory and cast there, so the GPU never holds more than the model in its sampling precision."""
        name = sampling_dtype((config or SamplerConfig()).dtype, str(path_or_name), device)
        dtype = TORCH_DTYPES["fp32" if name == "tf32" else name]
        model = cls.from_pretrained(path_or_name, device="cpu" if dtype != torch.float32 else device,
                                    dtype=torch.float32)
        if lora:
            model.load_lora(lora, lora_scale)
        if name == "tf32":
            speed.allow_tf32()
        return model.to(dtype=dtype).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @property
    def dtype_name(self) -> str:
        """The denoiser's precision as the commands name it: "fp32", "tf32" (fp32 on a CUDA device while torch's
        TF32 switch is on: what is in force, however it was set; :meth:`for_sampling`), "bf16" or "fp16"."""
        if self.dtype == torch.float32 and speed.tf32_in_force(self.device):
            return "tf32"
        names = {v: k for k, v in TORCH_DTYPES.items()}
        if self.dtype not in names:
            raise ValueError(f"the model is in {self.dtype}, which the commands do not sample in; "
                             f"load it in one of {', '.join(TORCH_DTYPES)} (--dtype)")
        return names[self.dtype]

    def to(self, device=None, dtype: torch.dtype | None = None) -> T2IModel:
        """Move (and cast) all components; clears the prompt cache."""
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        # SDXL's VAE overflows in fp16; its config asks to keep it in fp32 then (``force_upcast``)
        half = self.dtype in (torch.float16, torch.bfloat16)
        vae_dtype = torch.float32 if half and self.vae.config.get("force_upcast", False) else self.dtype
        for module, dtype in [(self.unet, self.dtype), (self.vae, vae_dtype),
                              *((m, self.dtype) for m in self.text_encoders if m is not None)]:
            module.to(self.device).eval()
            if module.dtype != dtype:  # cast only when needed: diffusers warns on every cast, also where
                # a model keeps no module in fp32 (its list is empty, as the VAEs' is)
                with drop_records("diffusers.models.modeling_utils", "There are modules in "):
                    module.to(dtype=dtype)
        self._prompt_cache.clear()
        return self

    def to_pipeline(self):
        """A diffusers pipeline sharing this model's (current) components.  If the UNet was wrapped
        for training (DDP, accelerate, torch.compile), put the unwrapped one back in ``self.unet`` first."""
        return self.adapter.build_pipeline(self)

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0) -> T2IModel:
        """Fuse a diffusers-format LoRA (a folder holding ``pytorch_lora_weights.safetensors`` or one
        other ``.safetensors``, or the file itself) into the UNet (and text encoder, if it has text
        layers) with diffusers' own ``load_lora_weights`` + ``fuse_lora(lora_scale=scale)``, so
        sampling and prediction use it. The adapter layers are unloaded after fusing: the model is
        plain again, and fusing a second LoRA adds to the first. A shipped LoRA's name
        (``"emojiworld-safe"``, :data:`scdpo.models.registry.SHIPPED_LORAS`) loads the packaged one."""
        from scdpo.models.registry import resolve_lora_path

        path = resolve_lora_path(path)
        if path.is_file():
            folder, weight_name = path.parent, path.name
        elif path.is_dir():
            files = sorted(p.name for p in path.glob("*.safetensors"))
            weight_name = "pytorch_lora_weights.safetensors" if "pytorch_lora_weights.safetensors" in files else (
                files[0] if len(files) == 1 else None)
            if weight_name is None:
                raise FileNotFoundError(f"no LoRA weights in {path}: expected pytorch_lora_weights.safetensors "
                                        f"(or a single .safetensors file), found {files or 'none'}")
            folder = path
        else:
            raise FileNotFoundError(f"LoRA not found: {path} (a LoRA folder, its .safetensors file, or a shipped "
                                    "LoRA's name: emojiworld-safe)")
        pipe = self.to_pipeline()
        # our trainer's LoRAs adapt the UNet only; diffusers then warns that the text encoder got
        # none, which is the point (dropped only when the file really has no text-encoder keys)
        try:
            quiet = () if _has_text_encoder_keys(folder / weight_name) else ("No LoRA keys associated to ",)
            with drop_records("diffusers.loaders.lora_base", *quiet), drop_records("diffusers.loaders.peft", *quiet):
                pipe.load_lora_weights(str(folder), weight_name=weight_name)
        except (KeyError, ValueError, RuntimeError) as err:  # keys without 'lora'; another UNet's shapes
            pipe.unload_lora_weights()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{folder / weight_name} is not a LoRA for this model ({first}); pass a LoRA "
                             "trained on this base model") from err
        except (OSError, SafetensorError) as err:
            raise ValueError(f"{folder / weight_name} is not a readable safetensors file ({err}); it is "
                             "truncated or damaged: copy or export it again") from err
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()
        self.clear_prompt_cache()  # fused in place; a text-encoder LoRA changes the encodings
        return self

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write a diffusers pipeline folder; built beside ``path`` and renamed into place (replacing it)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        old = tmp.with_name(tmp.name + ".old")
        try:
            self.to_pipeline().save_pretrained(tmp)
            if path.exists():
                os.rename(path, old)
            os.rename(tmp, path)
        finally:
            for leftover in (tmp, old):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
        return path

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: list[str], *, size: tuple[int, int] | None = None) -> Conditioning:
        """Encode a batch of prompts (no gradients; results cached per prompt string).

        Prompts longer than the tokenizer's ``model_max_length`` are truncated, with one warning
        per prompt.  ``size`` (height, width) only sets SDXL's ``add_time_ids`` (default: resolution).
        """
        if isinstance(prompts, str):
            raise TypeError("encode_prompts takes a list of prompts, not a single string")
        rows = {}
        for p in dict.fromkeys(prompts):
            if p in self._prompt_cache:
                self._prompt_cache.move_to_end(p)
                rows[p] = self._prompt_cache[p]
        missing = [p for p in dict.fromkeys(prompts) if p not in rows]
        step = self.text_batch_size.get(self.device.type, self.text_batch_size["cpu"])
        for start in range(0, len(missing), step):
            chunk = missing[start:start + step]
            context, pooled = self._encode_text(chunk)
            for i, p in enumerate(chunk):
                rows[p] = (context[i], None if pooled is None else pooled[i])
                self._prompt_cache[p] = rows[p]
        while len(self._prompt_cache) > self.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        context = torch.stack([rows[p][0] for p in prompts])
        pooled = None if rows[prompts[0]][1] is None else torch.stack([rows[p][1] for p in prompts])
        return Conditioning(context, pooled, self._time_ids(len(prompts), size))

    def unconditional(self, n: int, negative_prompt: str | list[str | None] | None = None, *,
                      size: tuple[int, int] | None = None) -> Conditioning:
        """Conditioning for classifier-free guidance: the negative prompt (one for all, or a list
        with one per image), else the empty prompt (for SDXL with ``force_zeros_for_empty_prompt``,
        zeros, as diffusers does)."""
        if isinstance(negative_prompt, list):
            if len(negative_prompt) != n:
                raise ValueError(f"{len(negative_prompt)} negative prompts for {n} images")
            c = self.encode_prompts([p or "" for p in negative_prompt], size=size)
            if not self.force_zeros_for_empty_prompt:
                return c
            keep = torch.tensor([p is not None for p in negative_prompt], device=c.context.device)
            zero = lambda t: None if t is None else t * keep.view(-1, *[1] * (t.dim() - 1)).to(t.dtype)  # noqa: E731
            return Conditioning(zero(c.context), zero(c.pooled), c.add_time_ids)
        if negative_prompt is None and self.force_zeros_for_empty_prompt:
            c = self.encode_prompts([""], size=size)
            zeros = lambda t: torch.zeros_like(t).expand(n, *t.shape[1:])  # noqa: E731
            return Conditioning(zeros(c.context), zeros(c.pooled), self._time_ids(n, size))
        return self.encode_prompts([negative_prompt or ""] * n, size=size)

    def clear_prompt_cache(self) -> None:
        """Forget cached prompt encodings (call after changing a text encoder)."""
        self._prompt_cache.clear()

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.tokenizers[0].model_max_length
        probe = self.tokenizers[0](prompts, padding="max_length", max_length=n + 1, truncation=True,
                                   return_tensors="pt")
        for prompt, mask in zip(prompts, probe.attention_mask):
            if mask[n]:
                warnings.warn(f"prompt {prompt[:60]!r} is longer than the tokenizer's {n}-token limit "
                              "and was truncated", stacklevel=4)
        return self.adapter.encode_text(self, prompts)

    def _time_ids(self, n: int, size: tuple[int, int] | None) -> torch.Tensor | None:
        return self.adapter.added_conditions(self, n, size)

    # ------------------------------------------------------------------ diffusion
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x_0) of the family (DDPM noising, or SD3's flow interpolation)."""
        return self.adapter.add_noise(self, latents, noise, timesteps)

    def noise_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` regresses onto, per ``prediction_type`` (epsilon, v or sample;
        SD3: the flow-matching velocity ``noise - latents``)."""
        return self.adapter.target(self, latents, noise, timesteps)

    def sample_timesteps(self, n: int, generator: torch.Generator, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``n`` training timesteps drawn with ``generator`` (on CPU), as the family trains."""
        return self.adapter.sample_timesteps(self, n, generator, lo, hi)

    def predict(self, noisy_latents: torch.Tensor, timesteps, cond: Conditioning, rows: int | None = None
                ) -> torch.Tensor:
        """The denoiser's prediction (same shape as ``noisy_latents``); gradients flow if enabled.
        With ``pad_rows`` (set for regional compile, ``TrainConfig.compile``) the batch is padded
        with zero rows to the next power of two and the output cut back: every op of the denoiser
        is per sample, so the rows kept are the unpadded ones (up to summation order), and a
        compiled block meets a handful of batch sizes, not one per size the anchor's rows take
        from batch to batch, each a new graph (docs/performance.md, "Compile in the trainer"). ``rows`` pads to
        exactly that many instead (the compiled sampler's tail batch: one graph for every batch of a call)."""
        n = len(noisy_latents)
        rows = max(rows, n) if rows is not None else (padded_rows(n) if self.pad_rows else n)
        if rows == n:
            return self.adapter.predict(self, noisy_latents, timesteps, cond)
        padded = Conditioning(pad_to(cond.context, rows), pad_to(cond.pooled, rows), pad_to(cond.add_time_ids, rows))
        timesteps = pad_to(timesteps, rows) if torch.is_tensor(timesteps) else timesteps
        return self.adapter.predict(self, pad_to(noisy_latents, rows), timesteps, padded)[:n]

    # ------------------------------------------------------------------ VAE
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                      sample: bool = False, batch_size: int = 8) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (posterior mean unless ``sample``)."""
        cfg, out = self.vae.config, []
        for chunk in images.split(batch_size):
            dist = self.vae.encode(chunk.to(self.device, self.vae.dtype)).latent_dist
            z = dist.sample(generator) if sample else dist.mode()
            out.append((z - (cfg.get("shift_factor") or 0.0)) * cfg.scaling_factor)
        return torch.cat(out).to(self.dtype)

    def decode_latents(self, latents: torch.Tensor, *, batch_size: int = 8, pad: bool = False) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1] (float32, on the model's device). With ``pad`` a last
        chunk shorter than ``batch_size`` is decoded padded with zero latents to it and cut back (the decoder
        works image by image): a compiled decoder meets one chunk size."""
        cfg, out = self.vae.config, []
        for chunk in latents.split(batch_size):
            n = len(chunk)
            z = chunk.to(self.device, self.vae.dtype) / cfg.scaling_factor + (cfg.get("shift_factor") or 0.0)
            z = pad_to(z, batch_size) if pad else z
            out.append(self.vae.decode(z, return_dict=False)[0][:n].float().clamp(-1, 1))
        return torch.cat(out)

    # ------------------------------------------------------------------ sampling
    def sample(self, prompts: list[str], seeds: list[int], config: SamplerConfig | None = None,
               **overrides) -> torch.Tensor:
        """Generate one image per (prompt, seed): (B, 3, H, W) float32 in [0, 1] on CPU.
        ``overrides`` replace fields of ``config`` (e.g. ``model.sample(p, s, steps=4)``)."""
        config = replace(config or SamplerConfig(), **overrides)
        return sample_images(self, prompts, seeds, config)
