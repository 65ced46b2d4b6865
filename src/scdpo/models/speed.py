"""Speed levers for the UNet on CUDA, shared by the trainer and the sampler (docs/performance.md):
the attention kernel, regional ``torch.compile``, fused QKV projections and channels-last memory.
Each is exact up to floating-point summation order; on the CPU they are no-ops unless asked."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections import Counter
from pathlib import Path

import torch

ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")
COMPILE_BLOCKS = ("ResnetBlock2D", "Transformer2DModel")
# torch.compile's modes that TrainConfig.compile_mode accepts (None: torch's default). Plain
# "max-autotune" is left out: it is autotuning and CUDA graphs at once, two levers that
# "max-autotune-no-cudagraphs" and "reduce-overhead" try one at a time
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def attention_backend(name: str, device) -> contextlib.AbstractContextManager:
    """Which kernel torch's scaled-dot-product attention (what diffusers' attention processors
    call) prefers on CUDA: ``"flash"`` (FlashAttention-2), ``"cudnn"`` (cuDNN's fused attention),
    ``"efficient"`` (memory-efficient) first, the others after it for shapes it does not support
    (cuDNN, for one, may refuse SD 1.5's 160-wide heads); ``"math"`` only the reference kernel.
    ``"auto"``, and any non-CUDA device, leave torch's own choice."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    if name == "auto" or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if name == "math":
        return sdpa_kernel(SDPBackend.MATH)
    order = [kernels[name], *(k for k in kernels.values() if k != kernels[name]), SDPBackend.MATH]
    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:  # torch < 2.6: that kernel only
        return sdpa_kernel(kernels[name])
    return sdpa_kernel(order, set_priority=True)


def compile_blocks(unet, blocks: tuple[str, ...] = COMPILE_BLOCKS, **compile_kwargs) -> int:
    """Regional ``torch.compile``: compile each repeated block of the UNet in place (resnet and
    transformer blocks, where inductor fuses GroupNorm/SiLU/LayerNorm/GEGLU with their
    neighbours) rather than the whole model: shorter compile, the same kernels (diffusers'
    ``compile_repeated_blocks`` does this for the transformer blocks only).  Idempotent; returns
    the number of blocks newly compiled."""
    import torch._dynamo

    targets = [m for m in unet.modules() if type(m).__name__ in blocks]
    # dynamo keeps one cache per code object (each block class's forward, shared by all its
    # instances), and each block shape meets about 12 graphs in a training step: grad, no-grad and
    # inference mode, inputs with and without requires_grad, the step's batch sizes. EmojiWorld's
    # recipe step needs 143 resnet graphs at batch 4 (12 shapes; benchmarks/compile_graphs.py), more
    # as the anchor's batch changes size; the old limit of 64 ran out, and the H200 then ran 40-160 s
    # a step (docs/performance.md)
    shapes = Counter(type(m).__name__ for m in {_shape_key(m): m for m in targets}.values())
    limit = max(64, 32 * max(shapes.values(), default=0))
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                           32 * sum(shapes.values()))
    # static shapes: one specialised graph per block shape (with automatic dynamic shapes the spatial
    # sizes go symbolic too, and inductor fails on them on the CPU with torch 2.13)
    compile_kwargs.setdefault("dynamic", False)
    n = 0
    for module in targets:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(**compile_kwargs)
            n += 1
    return n


@contextlib.contextmanager
def compile_cache(folder: str | Path | None, save: bool = True):
    """Carry ``torch.compile``'s work from one run to the next, to a fresh machine too: load every
    artefact file (``*.bin``: inductor's kernels, AOTAutograd's graphs) in ``folder`` before
    compiling, and, with ``save``, when this process compiled a kernel that none of them held, write
    its artefacts to a new file there, atomically (``torch.compiler.load_cache_artifacts`` /
    ``save_cache_artifacts``, torch's "mega-cache"). One file a run that compiled something new,
    because a process saves only what it used: rewriting one file would drop the kernels of graphs
    that this run did not meet. Dynamo still traces every graph; a hit skips inductor's code
    generation and the kernels' compilation. Artefacts of another torch or GPU are misses; a file
    torch cannot read is skipped with one warning. ``folder`` None: nothing is loaded or saved.

    The files hold compiled code and pickled graphs, as torch's own cache folder does: point this
    only at a folder your own runs wrote, never at one from elsewhere."""
    if folder is None:
        yield
        return
    import logging
    import time
    import uuid
    import warnings

    from scdpo.utils.io import atomic_path

    folder = Path(folder)
    torch_log = logging.getLogger("torch.compiler._cache")
    for path in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
        level = torch_log.level
        torch_log.setLevel(logging.CRITICAL)  # its traceback would bury our one line
        try:
            info, why = torch.compiler.load_cache_artifacts(path.read_bytes()), "not cache artefacts this torch reads"
        except Exception as e:  # noqa: BLE001 - torch raises several kinds for a foreign or damaged file
            info, why = None, f"{type(e).__name__}: {e}"
        finally:
            torch_log.setLevel(level)
        if info is None:
            warnings.warn(f"compile cache file {path} could not be read ({why}); skipped (delete it to silence this)",
                          stacklevel=3)
    misses = _kernel_misses()
    try:
        yield
    finally:
        saved = torch.compiler.save_cache_artifacts() if save and _kernel_misses() > misses else None
        if saved is not None and saved[0]:
            name = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}.bin"
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(saved[0])


def _kernel_misses() -> int:
    """Inductor's cache misses so far in this process: the kernels it generated rather than found."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_miss"]


def _shape_key(module) -> tuple:
    """A block's class and parameter shapes: blocks with equal keys share their compiled graphs."""
    return type(module).__name__, tuple(tuple(p.shape) for p in module.parameters())


def has_adapters(unet) -> bool:
    """Whether peft adapters (LoRA) are attached: fused projections would bypass them."""
    return bool(getattr(unet, "peft_config", None))


def compile_whole(module, **compile_kwargs) -> int:
    """``torch.compile`` a module's whole forward in place, static shapes (one graph a batch size): the
    sampler's compile (``SamplerConfig.compile``) of the denoiser and of the VAE's decoder. On one H100, on the
    sampler's best eager settings (fused QKV, cuDNN attention, one decoder call a batch), it sampled SD 1.5-shaped
    images 1.42x diffusers' pipeline against 1.38x with :func:`compile_blocks`, in 22 against 32 GB at 64 images
    (docs/performance.md, "What to compile for sampling"). Idempotent; returns 1 if it compiled."""
    if getattr(module, "_compiled_call_impl", None) is not None:
        return 0
    compile_kwargs.setdefault("dynamic", False)
    module.compile(**compile_kwargs)
    return 1


@contextlib.contextmanager
def compiled(module, **compile_kwargs):
    """Run with ``module`` compiled whole (:func:`compile_whole`), then as it was: a lever of one sampler call, like
    the others here. Dynamo keeps its graphs on the code they traced, so a later call compiled again reuses them
    without tracing (tests/test_perf.py, the compiled sampler's padding test)."""
    done = compile_whole(module, **compile_kwargs)
    try:
        yield module
    finally:
        if done:
            module._compiled_call_impl = None


@contextlib.contextmanager
def fused_qkv(unet):
    """Run with diffusers' fused QKV projections (one matmul for q, k, v of self-attention, one
    for k, v of cross-attention), then restore the UNet exactly: the fused layers are removed, so
    nothing extra is saved or trained.  A no-op for UNets with LoRA adapters or without attention."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    # a wrapped UNet (FSDP shards) or one with adapters is left alone
    attns = [m for m in unet.modules() if isinstance(m, Attention)] if isinstance(unet, UNet2DConditionModel) else []
    if not attns or has_adapters(unet):
        yield unet
        return
    unet.fuse_qkv_projections()
    try:
        yield unet
    finally:
        unet.unfuse_qkv_projections()
        unet.original_attn_processors = None
        for m in attns:
            for name in ("to_qkv", "to_kv"):
                if hasattr(m, name):
                    delattr(m, name)
            m.fused_projections = False


@contextlib.contextmanager
def channels_last(module):
    """Run with the module's 4-D weights in channels-last (NHWC) memory format, then restore."""
    module.to(memory_format=torch.channels_last)
    try:
        yield module
    finally:
        module.to(memory_format=torch.contiguous_format)


def conv_layout(device: str | torch.device) -> torch.memory_format:
    """The memory format for the frozen convolutional nets that scdpo runs for inference
    (EfficientNet-Lite0's features, the cost stage's VAE round trip): channels-last on the CPU,
    where oneDNN measured it faster (EfficientNet 3.0-3.4x with folding, the VAE round trip
    1.09x; BENCHMARKS.md, "EfficientNet-Lite0 folded"), the default layout elsewhere. On a GPU
    channels-last measured 0.87x for SD sampling (docs/performance.md), and a profiled GPU eval
    found the reference features slow while they ran channels-last; whether this layout speeds
    them there is not measured yet (docs/performance.md, "The eval's overlap")."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def allow_tf32() -> None:
    """TF32 matmuls on CUDA for the rest of the process: what ``SamplerConfig.dtype == "tf32"`` means. torch's
    switch is process-wide (no per-module or per-thread one), so a command that samples in "tf32" runs all its
    CUDA matmuls so, the judges' and cost model's too, whatever thread they run on: one setting for the whole
    command keeps it deterministic."""
    torch.backends.cuda.matmul.allow_tf32 = True


@contextlib.contextmanager
def tf32_restored():
    """Run a block, then put torch's TF32 switch back as it was: a process that runs several commands in a row
    (the demo; a benchmark's rows) keeps one command's "tf32" sampling (:func:`allow_tf32`) out of the next,
    e.g. a training after an EmojiWorld build on a GPU, whose `auto` is "tf32"."""
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def tf32_in_force(device: str | torch.device) -> bool:
    """Whether fp32 matmuls on ``device`` run in TF32 now (a CUDA device with torch's switch on)."""
    return torch.device(device).type == "cuda" and torch.backends.cuda.matmul.allow_tf32


def to_device(x, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` (a tensor, array or list) as a tensor on ``device``, without making the host wait for the GPU.

    torch copies host memory to a CUDA device and then synchronises the stream unless the copy is
    ``non_blocking`` from pinned memory, so each plain ``.to("cuda")`` of a training step's small inputs
    (noise, timesteps, costs, pair indices) holds the host until every kernel queued before it has run: the
    Python work that follows (losses, the next run's inputs) then cannot overlap the UNet's. Here a CPU
    tensor is pinned (the DataLoader's already are) and copied asynchronously; the caching host allocator
    keeps the pinned block until the copy has run. Elsewhere (the CPU, a tensor already there) this is
    ``torch.as_tensor(x, dtype=dtype, device=device)``."""
    device = torch.device(device)
    t = torch.as_tensor(x, dtype=dtype)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
