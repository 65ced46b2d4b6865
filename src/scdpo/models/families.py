"""One adapter per model family: what differs between SD 1.x/2.x, SDXL and SD3 lives here, behind
one registry, so :class:`scdpo.models.t2i.T2IModel`, the trainer and the samplers never branch on
the family.

A family says: which diffusers pipeline class it is (loading, saving, LoRA files), how prompts
become conditioning (text encoding and added conditions such as SDXL's pooled embedding and size
ids, SD3's pooled projection), how training draws timesteps, noises latents and what the denoiser
regresses onto (epsilon / v for the DDPM families, the flow-matching velocity for SD3), how the
denoiser is called, and which inference schedulers fit.  To add one (Flux follows SD3's pattern):
subclass :class:`Family`, override what differs, and add it to :data:`FAMILIES` (docs/models.md).
"""

from __future__ import annotations

import torch

__all__ = ["FAMILIES", "Family", "SD", "SD3", "SDXL", "get_family", "family_of_pipeline"]


class Family:
    """Stable Diffusion 1.x/2.x (and EmojiWorld): one text encoder, last hidden state, DDPM noising.

    Subclasses override what differs; each method takes the :class:`T2IModel` it serves."""

    name = "sd"
    pipeline_class = "StableDiffusionPipeline"
    denoiser = "unet"  # the pipeline's attribute holding the trained network
    text_components = (("tokenizer", "text_encoder"),)
    force_zeros_for_empty_prompt = False  # the family's default for unconditional guidance

    # ------------------------------------------------------------------ pipeline
    def pipeline_cls(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def load_kwargs(self) -> dict:
        """Extra ``from_pretrained`` kwargs (optional components we never use)."""
        return {"image_encoder": None, "feature_extractor": None, "safety_checker": None,
                "requires_safety_checker": False}

    def build_pipeline(self, model):
        """A diffusers pipeline sharing ``model``'s current components."""
        kwargs = {"vae": model.vae, self.denoiser: model.unet, "scheduler": model.scheduler}
        for (tok, enc), tokenizer, encoder in zip(self.text_components, model.tokenizers, model.text_encoders):
            kwargs[tok], kwargs[enc] = tokenizer, encoder
        return self.pipeline_cls()(**kwargs, **self.pipeline_extras(model))

    def pipeline_extras(self, model) -> dict:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    # ------------------------------------------------------------------ text
    def encode_text(self, model, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(context, pooled)`` of a batch of prompts (pooled None when the family has none)."""
        ids, masks = [], []
        for tokenizer in model.tokenizers:
            tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
            ids.append(tokens.input_ids)
            masks.append(tokens.attention_mask)
        return self.encode_tokens(model, ids, masks)

    def encode_tokens(self, model, ids: list[torch.Tensor], masks: list[torch.Tensor]):
        """``(context, pooled)`` from per-encoder token ids (B, T) and attention masks (the
        attacks call this with ids of their own, gradients enabled)."""
        contexts = [self._encoder_output(model, i, ids, masks)[0] for i in range(len(model.text_encoders))]
        return torch.cat(contexts, dim=-1).to(model.dtype), None

    def _encoder_output(self, model, i: int, ids, masks, **kwargs):
        encoder = model.text_encoders[i]
        if getattr(encoder.config, "use_attention_mask", False):  # as diffusers: only when asked for
            kwargs["attention_mask"] = masks[i].to(model.device)
        return encoder(ids[i].to(model.device), **kwargs)

    def added_conditions(self, model, n: int, size: tuple[int, int] | None) -> torch.Tensor | None:
        """Per-image extra ids besides the text (SDXL's size/crop ids), or None."""
        return None

    # ------------------------------------------------------------------ training
    def noise_scheduler(self, scheduler_config):
        """The scheduler of the forward process (noising, targets, training timesteps)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(scheduler_config, clip_sample=False)

    def prediction_type(self, noise_scheduler) -> str:
        return noise_scheduler.config.prediction_type

    def sample_timesteps(self, model, n: int, gen: torch.Generator, lo: int, hi: int | None) -> torch.Tensor:
        """``n`` training timesteps, uniform over ``lo .. hi - 1`` (None: all training timesteps)."""
        hi = model.noise_scheduler.config.num_train_timesteps if hi is None else hi
        return torch.randint(lo, hi, (n,), generator=gen)

    def add_noise(self, model, latents, noise, timesteps):
        """q(x_t | x_0) of the DDPM forward process."""
        return model.noise_scheduler.add_noise(latents, noise, timesteps)

    def target(self, model, latents, noise, timesteps):
        """What the denoiser regresses onto, per ``prediction_type``."""
        if model.prediction_type == "epsilon":
            return noise
        if model.prediction_type == "v_prediction":
            return model.noise_scheduler.get_velocity(latents, noise, timesteps)
        if model.prediction_type == "sample":
            return latents
        raise ValueError(f"unsupported prediction_type {model.prediction_type!r}")

    def predict(self, model, noisy, timesteps, cond):
        return model.unet(noisy.to(model.dtype), timesteps, encoder_hidden_states=cond.context,
                          added_cond_kwargs=cond.added_cond_kwargs, return_dict=False)[0]

    # ------------------------------------------------------------------ sampling
    def make_scheduler(self, name: str, scheduler_config):
        """A fresh inference scheduler ``name`` sharing ``scheduler_config``'s noise schedule."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

        if name == "ddim":  # clipping x0 to [-1, 1] is meant for pixel-space models, never for latents
            return DDIMScheduler.from_config(scheduler_config, clip_sample=False)
        if name == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++")
        if name == "euler":
            return EulerDiscreteScheduler.from_config(scheduler_config)
        raise ValueError(f"unknown scheduler {name!r}; choose one of dpmsolver++, ddim, euler")

    # ------------------------------------------------------------------ LoRA
    def save_lora_weights(self, folder, layers: dict, weight_name: str, metadata: dict) -> None:
        """Write the denoiser's LoRA ``layers`` (diffusers naming) as ``load_lora_weights`` expects."""
        self.pipeline_cls().save_lora_weights(folder, weight_name=weight_name, **{
            f"{self.denoiser}_lora_layers": layers, f"{self.denoiser}_lora_adapter_metadata": metadata})


class SDXL(Family):
    """SDXL: two CLIP encoders (penultimate layers, concatenated), the second's projected pooled
    embedding and six size/crop ids as added conditions; zeros for the empty negative prompt."""

    name = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    text_components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    force_zeros_for_empty_prompt = True

    def load_kwargs(self) -> dict:
        return {"image_encoder": None, "feature_extractor": None, "add_watermarker": False}

    def pipeline_extras(self, model) -> dict:
        return {"force_zeros_for_empty_prompt": model.force_zeros_for_empty_prompt, "add_watermarker": False}

    def encode_tokens(self, model, ids, masks):
        contexts, pooled = [], None
        for i in range(len(model.text_encoders)):
            out = self._encoder_output(model, i, ids, masks, output_hidden_states=True)
            contexts.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: projected pooled embedding
                pooled = out[0]
        pooled = None if pooled is None else pooled.to(model.dtype)
        return torch.cat(contexts, dim=-1).to(model.dtype), pooled

    def added_conditions(self, model, n, size):
        # micro-conditioning: original size, crop top-left, target size
        h, w = size or (model.resolution, model.resolution)
        return torch.tensor([h, w, 0, 0, h, w], dtype=model.dtype, device=model.device).repeat(n, 1)


class SD3(Family):
    """Stable Diffusion 3 (rectified flow; Esser et al. 2024, "Scaling Rectified Flow Transformers").

    Text: CLIP-L and CLIP-G penultimate layers concatenated, zero-padded to T5's width and joined
    with T5's tokens along the sequence; pooled: both CLIP projections concatenated (as diffusers'
    ``StableDiffusion3Pipeline.encode_prompt``).  Forward process x_t = (1 - sigma) x_0 + sigma noise
    with sigma = t / num_train_timesteps; the transformer regresses the velocity noise - x_0 (as
    diffusers' ``train_dreambooth_lora_sd3.py``, without its optional preconditioning and loss
    weighting)."""

    name = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    denoiser = "transformer"
    text_components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"),
                       ("tokenizer_3", "text_encoder_3"))

    def load_kwargs(self) -> dict:
        return {"image_encoder": None, "feature_extractor": None}

    def pipeline_extras(self, model) -> dict:
        return {}

    def encode_tokens(self, model, ids, masks):
        clip, pooled = [], []
        for i in range(2):
            out = self._encoder_output(model, i, ids, masks, output_hidden_states=True)
            clip.append(out.hidden_states[-2])
            pooled.append(out[0])
        clip = torch.cat(clip, dim=-1)
        if model.text_encoders[2] is None:  # the pipeline allows dropping T5: zeros, as diffusers
            width = model.unet.config.joint_attention_dim
            t5 = torch.zeros(len(ids[0]), model.tokenizers[0].model_max_length, width, device=model.device)
        else:
            t5 = self._encoder_output(model, 2, ids, masks)[0]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5.to(clip.dtype)], dim=-2).to(model.dtype), torch.cat(pooled, -1).to(model.dtype)

    def noise_scheduler(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)

    def prediction_type(self, noise_scheduler) -> str:
        return "flow"

    def sample_timesteps(self, model, n, gen, lo, hi):
        """Uniform over the indices ``lo .. hi - 1`` of the (shifted) training timesteps in
        ascending order, so ``lo``/``hi`` bound the noise level as they do for DDPM families."""
        ascending = model.noise_scheduler.timesteps.flip(0)
        hi = len(ascending) if hi is None else hi
        return ascending[torch.randint(lo, hi, (n,), generator=gen)]

    def _sigma(self, model, timesteps, like):
        sigma = timesteps.to(like.device, torch.float32) / model.noise_scheduler.config.num_train_timesteps
        return sigma.view(-1, *[1] * (like.dim() - 1))

    def add_noise(self, model, latents, noise, timesteps):
        sigma = self._sigma(model, timesteps, latents)
        return ((1 - sigma) * latents.float() + sigma * noise.float()).to(latents.dtype)

    def target(self, model, latents, noise, timesteps):
        return noise - latents  # d x_t / d sigma

    def predict(self, model, noisy, timesteps, cond):
        t = torch.as_tensor(timesteps, device=noisy.device)
        t = t.expand(len(noisy)) if t.dim() == 0 else t
        return model.unet(hidden_states=noisy.to(model.dtype), timestep=t, encoder_hidden_states=cond.context,
                          pooled_projections=cond.pooled, return_dict=False)[0]

    def make_scheduler(self, name, scheduler_config):
        """``euler``: diffusers' FlowMatchEulerDiscreteScheduler (SD3's own); ``dpmsolver++``:
        DPM-Solver++ on the same flow sigmas; ``ddim`` has no flow-matching form here."""
        from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

        if name == "euler":
            return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        if name == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(
                scheduler_config, algorithm_type="dpmsolver++", use_flow_sigmas=True,
                prediction_type="flow_prediction", flow_shift=scheduler_config.get("shift", 1.0))
        raise ValueError(f"scheduler {name!r} does not support flow-matching (SD3) models; choose euler or dpmsolver++")


FAMILIES: dict[str, Family] = {f.name: f for f in (Family(), SDXL(), SD3())}
SD = Family


def get_family(name: str) -> Family:
    """The adapter of family ``name`` (``"sd"``, ``"sdxl"``, ``"sd3"``)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_pipeline(class_name: str) -> Family | None:
    """The adapter of a diffusers pipeline class name (``model_index.json``'s ``_class_name``)."""
    return next((f for f in FAMILIES.values() if f.pipeline_class == class_name), None)
