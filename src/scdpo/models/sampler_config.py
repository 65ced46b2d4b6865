"""How images are sampled (:class:`SamplerConfig`): a torch-free module, so that every command
that nests it in its config builds its flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULERS = ("dpmsolver++", "ddim", "euler")
#: the precisions a command loads the model in to sample (SamplerConfig.dtype)
SAMPLING_DTYPES = ("auto", "fp32", "tf32", "bf16", "fp16")


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
        batch_size: images per UNet batch (with guidance, the UNet sees twice as many); None (the
            default) picks by device and latent size (:func:`auto_batch`): 1024 on a GPU for latents of
            at most 16x16 (EmojiWorld's: 3.8-5.7x today's images/s on an H200, every judge verdict the
            same; docs/performance.md, "Sampling batches"), else 64.
        height, width: image size in pixels; None means the model's native resolution.  Must be a
            multiple of the VAE's downsampling factor (8 for SD/SDXL).
        progress: show a tqdm bar over denoising steps (batches x steps).
        attention: the scaled-dot-product attention kernel preferred on CUDA: ``"auto"`` (torch's
            choice), ``"flash"``, ``"cudnn"``, ``"efficient"`` or ``"math"`` (docs/performance.md).
        fuse_qkv: fuse the q/k/v projections of every attention layer into one matmul while
            sampling (restored afterwards; ignored when the UNet carries LoRA adapters, which the fused
            layer would bypass). Off by default: on an H200 it changed nothing (docs/performance.md).
        channels_last: run the UNet and VAE in channels-last memory format while sampling.
        compile: ``torch.compile`` the whole denoiser and the VAE's decoder for this call (static shapes;
            a call's last, shorter batch is padded to the full one, so a call compiles once; a later call
            reuses the graphs, and a call without compile runs the modules eagerly). At SD
            scale on one H100, on the best eager settings (fused QKV, cuDNN attention, one decoder call a
            batch), 1.42x diffusers' pipeline after about 46 s of warm-up; on the commands' own defaults
            1.35-1.36x, 10 s of warm-up once inductor's disk caches hold the kernels (docs/performance.md, "What
            to compile for sampling", "The compile's last levers"); until 2026-12-06 it compiled their resnet and
            transformer blocks (1.38x).
        cuda_graphs: replay every UNet call of the denoising loop from a CUDA graph
            (:class:`scdpo.models.graphs.GraphedPredict`: one graph per batch size (unpadded), recorded at
            its first call, whose replay is checked against eager; any mismatch or error falls back
            to eager with one warning). Issue 16's "CUDA-graph the denoising loop": for a UNet whose
            calls wait on their launches (EmojiWorld's; a compiled one's remaining launches). Graphs
            are recorded anew in every ``sample()`` call (a LoRA loaded, fused or rescaled between
            calls changes what a graph would have to replay), about four eager calls each (two warm-up
            runs, the recording, the check), so they can pay only where a call runs many steps. On a
            CUDA device only (ignored elsewhere). Off by default: on an H100 (BENCHMARKS.md,
            "Thirty-second round") EmojiWorld sampled 3.1x faster at 64 images a batch, but no faster
            at the 1,024 the sampler picks for small latents, and SD-shaped sampling ran 0.89x. The whole
            EmojiWorld `scdpo eval` (its worker scoring beside the sampling thread) took 4.8 s with them
            against 5.2-5.3 s without, every rate the same (one H100, one run; BENCHMARKS.md, "Fortieth
            round") and 5.1 s against 4.7 s in another (forty-second), so `scdpo eval` sets it only when
            asked (``--cuda-graphs``, EvalConfig.cuda_graphs); graphs record in torch's "thread_local"
            capture mode (:func:`scdpo.models.graphs.cuda_recorder`), so the eval's worker thread may use
            the GPU while the sampler records.
        vae_batch_size: images per VAE decoder call; None (the default): the batch itself where the
            batch is picked as 1024, else 8 (for SD-sized latents more bought 2% for 3x the memory; a
            set batch_size keeps 8, so runs with --batch-size decode as before).
        guard: an inference-time safety guard (:mod:`scdpo.models.guards`): ``"sld:weak|medium|strong|max"``
            (Safe Latent Diffusion) or ``"safree"``; None: plain classifier-free guidance.
        dtype: the precision a command loads the model in to sample: "fp32", "tf32", "bf16", "fp16" or "auto"
            (the default, :func:`sampling_dtype`): bf16 on a CUDA GPU for a real model (fp16 on a GPU
            below compute capability 8, whose bf16 is emulated), as diffusers' examples sample and as benchmarks/gpu_sampling.py measured
            scdpo's sampler against diffusers' pipeline; "tf32" for EmojiWorld on a CUDA GPU (since
            2026-12-06: diffusers' "Speed up inference" guide recommends TF32 matmuls; bf16 changed 1.4% of
            EmojiWorld's judge verdicts, TF32 0.1%, fp32 until then; docs/performance.md, "Sampling
            precision"); fp32 on the CPU and other devices. "tf32": fp32 weights with TF32 matmuls on a CUDA GPU of compute capability 8 or
            more (diffusers' training examples' ``--allow_tf32``; cuDNN's convolutions use TF32 by torch's
            default already), fp32 elsewhere; torch has no per-module switch, so it sets
            ``torch.backends.cuda.matmul.allow_tf32`` for the rest of the process (``speed.allow_tf32``: the
            judges' and cost model's matmuls too, one setting for the whole command). On one H200 the whole EmojiWorld
            `scdpo data build` took 5.6 s against fp32's 6.4 s, 97.8% of its prompts choosing as today's
            settings did (fp32's: 97.8%), and `scdpo eval` 5.5 s against 5.8 s, every rate within 0.27 points
            of today's (fp32's: the same) (docs/performance.md, "Sampling precision"; thirty-seventh round).
            A VAE with force_upcast (diffusers' default where its config does not
            say, and SDXL's) decodes in fp32 whatever this says. Read where a command loads its model (:meth:`T2IModel.for_sampling`); a model
            already loaded samples in its own dtype.
    """

    steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str = "dpmsolver++"
    negative_prompt: str | list[str | None] | None = None
    batch_size: int | None = None
    height: int | None = None
    width: int | None = None
    progress: bool = True
    attention: str = "auto"
    fuse_qkv: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    vae_batch_size: int | None = None
    guard: str | None = None
    dtype: str = "auto"

    def __post_init__(self):
        if self.dtype not in SAMPLING_DTYPES:
            raise ValueError(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(SAMPLING_DTYPES)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if self.steps < 1 or any(b is not None and b < 1 for b in (self.batch_size, self.vae_batch_size)):
            raise ValueError(f"steps, batch_size and vae_batch_size must be >= 1, got {self.steps}, "
                             f"{self.batch_size} and {self.vae_batch_size}")
        from scdpo.models.speed import ATTENTION_BACKENDS

        if self.cuda_graphs and self.compile:
            # as in the trainer: compile's own graphs and recompilations do not belong inside a CUDA graph
            raise ValueError("cuda_graphs and compile are not used together (neither measured with the other); "
                             "pick one")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {self.attention!r}; choose one of {ATTENTION_BACKENDS}")
        from scdpo.models.guards import get_guard

        get_guard(self.guard)  # ValueError naming an unknown guard or option


def sampling_dtype(choice: str, model: str, device) -> str:
    """The precision ``choice`` (SamplerConfig.dtype) means for ``model`` on ``device`` (None: CUDA if
    available, as :class:`T2IModel` picks): itself unless "auto" ("tf32" off CUDA or before compute
    capability 8: "fp32"). "auto" on CUDA is bf16 for a real model (fp16 on a GPU without bf16 in hardware,
    before compute capability 8) and tf32 for EmojiWorld (fp32 before compute capability 8); fp32 on the CPU
    and other devices (see SamplerConfig.dtype)."""
    import torch

    from scdpo.models.registry import model_domain

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = dev.type == "cuda" and torch.cuda.is_available()
    if choice == "tf32":  # tensor cores from compute capability 8 (Ampere): elsewhere the arithmetic is fp32's
        return "tf32" if on_cuda and torch.cuda.get_device_capability(dev)[0] >= 8 else "fp32"
    if choice != "auto":
        return choice
    # without CUDA a "cuda" device fails where the model loads, with torch's own message
    if not on_cuda:
        return "fp32"
    if model_domain(str(model)) == "emojiworld":  # fp32 arithmetic with TF32 matmuls (fortieth round)
        return sampling_dtype("tf32", model, dev)
    # bf16 in hardware from compute capability 8 (Ampere); torch's is_bf16_supported() also counts the
    # emulated bf16 of a V100 or T4, slower there than fp16
    return "bf16" if torch.cuda.get_device_capability(dev)[0] >= 8 else "fp16"


def with_sampling_dtype(config: SamplerConfig, model: str, device, loaded=None) -> SamplerConfig:
    """``config`` with its dtype made concrete: ``loaded``'s (a model already loaded samples in its own),
    else :func:`sampling_dtype`'s. What a resumable command records, so that a run resumed on another
    device cannot mix precisions under "auto"."""
    from dataclasses import replace

    dtype = getattr(loaded, "dtype_name", None) or sampling_dtype(config.dtype, model, device)
    return replace(config, dtype=dtype)


def without_fp32(settings: dict) -> dict:
    """``settings`` without its "dtype" when that is fp32: the folders written before SamplerConfig.dtype
    existed sampled in fp32 and saved no such key, and must still resume. An unresolved "auto" is an error
    (it may mean either): record settings after :func:`with_sampling_dtype`."""
    if settings.get("dtype") == "auto":
        raise ValueError('settings with dtype "auto" are not recorded: resolve it first (with_sampling_dtype)')
    return {k: v for k, v in settings.items() if not (k == "dtype" and v == "fp32")}


def dtype_hint(was: dict, now: dict) -> str:
    """A resume error's advice when the folder was sampled in fp32 (no key: written before --dtype existed,
    or under an "auto" that meant fp32, as EmojiWorld's did on a GPU until 2026-12-06) and this run resolved
    another precision; else ""."""
    if "dtype" in was or now.get("dtype", "fp32") == "fp32":
        return ""
    return (f"; it was sampled in fp32 and this run would sample in {now['dtype']}: add --dtype fp32 to "
            "resume it")


#: images per batch on the CPU, and on a GPU for latents larger than SMALL_LATENT (today's default)
DEFAULT_BATCH, DEFAULT_VAE_BATCH = 64, 8
#: on a GPU, latents of at most this many pixels (EmojiWorld's 16x16, the measured case) are launch-bound at
#: 64 images a batch; an SD-family VAE at 256 px (32x32 latents) would not decode 1024 images at once
SMALL_LATENT, SMALL_LATENT_BATCH = 16 * 16, 1024
#: GPU memory an EmojiWorld image of a batch takes while sampling (fp32; 1.23 GB at 64 images, 9.5 GB at
#: 1024 on an H200: about 8.6 MB an image, rounded up), for a GPU with less room than the H200
BYTES_PER_SMALL_IMAGE = 9 * 2**20


def auto_batch(config: SamplerConfig, device_type: str, latent_hw: tuple[int, int],
               free_bytes: int | None = None) -> tuple[int, int]:
    """(images per UNet batch, images per VAE decoder call) of ``config``, its None fields picked.

    On a GPU, small latents (EmojiWorld's 16x16) leave the UNet waiting on kernel launches at 64
    images a batch: 1024 measured 3.8-5.7x the images/s on an H200 with every judge verdict unchanged
    (benchmarks/emojiworld_throughput.py; docs/performance.md, "Sampling batches"). Larger latents
    (SD's 64x64 and up fill the GPU at 64 already) keep today's 64 and 8. On the CPU, 64 and 8.
    Each image keeps its own seed, so the batch changes which kernels run, not what is drawn. With
    ``free_bytes`` (the GPU's free memory), the picked batch is halved until it takes at most half of
    it, down to 64: a small GPU gets what fits, not an out-of-memory error."""
    small = device_type == "cuda" and latent_hw[0] * latent_hw[1] <= SMALL_LATENT
    picked = SMALL_LATENT_BATCH if small else DEFAULT_BATCH
    while small and free_bytes is not None and picked > DEFAULT_BATCH \
            and picked * BYTES_PER_SMALL_IMAGE > free_bytes / 2:
        picked //= 2
    batch = config.batch_size or picked
    # a batch the user set keeps today's decoder batch: a run with --batch-size decodes as it did before
    # (the rounds pass --batch-size 256 and compare with seeds trained on earlier rounds' data)
    vae = config.vae_batch_size or (batch if small and config.batch_size is None else DEFAULT_VAE_BATCH)
    return batch, vae
