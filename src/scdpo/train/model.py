"""Policy and reference UNets for preference training, and what the trainer writes out.

LoRA (the default): peft adapters on the UNet, added the diffusers way (``unet.add_adapter``).
The reference is the same UNet with its adapters disabled (as diffusers' Diffusion-DPO script
does), never a second copy.  Full fine-tuning: the reference is a frozen copy of the base UNet.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch

from scdpo.models.speed import compile_blocks
from scdpo.models.t2i import Conditioning, T2IModel
from scdpo.utils.io import current_umask

LORA_FILE = "pytorch_lora_weights.safetensors"


@contextlib.contextmanager
def using_unet(model: T2IModel, unet):
    """Make ``model.predict`` (and sampling) run ``unet`` (e.g. the DDP-wrapped policy) for a while."""
    saved, model.unet = model.unet, unet
    try:
        yield model
    finally:
        model.unet = saved


def add_lora(unet, rank: int, alpha: float, targets: list[str]) -> None:
    """Freeze the UNet and add a trainable LoRA adapter (B = 0 at init, so policy == reference)."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet.requires_grad_(False)
    names = [n for n, _ in unet.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"LoRA target module(s) {', '.join(missing)} not found in the UNet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets)))
    cast_training_params(unet, torch.float32)  # trainable LoRA in fp32 even when the base is bf16/fp16


class Reference:
    """The frozen reference's prediction: ``ref(model, noisy, t, cond)`` without gradients.
    ``predict``: how the reference's UNet is called (default ``model.predict``; the trainer sets a
    :class:`scdpo.models.graphs.GraphedPredict` of its own with cuda_graphs, whose graphs are
    recorded with the adapters off)."""

    def __init__(self, policy_unet, full: bool, dtype: torch.dtype):
        self.unet = policy_unet
        self.copy = None
        self.predict = None
        self._adapter_layers = None
        if full:  # before training: the base weights
            self.copy = copy.deepcopy(policy_unet).requires_grad_(False).eval().to(dtype=dtype)
            if getattr(self.copy, "is_gradient_checkpointing", False):
                self.copy.disable_gradient_checkpointing()

    @contextlib.contextmanager
    def active(self, model: T2IModel):
        if self.copy is not None:
            with using_unet(model, self.copy):
                yield
            return
        self._set_adapters(False)
        try:
            with using_unet(model, self.unet):
                yield
        finally:
            self._set_adapters(True)

    def _set_adapters(self, enabled: bool) -> None:
        """diffusers' ``disable_adapters()`` / ``enable_adapters()`` on the adapter layers found once: those walk
        every module of the UNet on every call, a few ms of host time a step, which a graphed step, whose
        UNet calls cost the host almost nothing, waits for (docs/performance.md, "Host syncs")."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._adapter_layers is None:
            self._adapter_layers = [m for m in self.unet.modules() if isinstance(m, BaseTunerLayer)]
            if not self._adapter_layers:
                raise ValueError("the reference disables the policy's LoRA adapters, and the UNet has none")
        for m in self._adapter_layers:
            m.enable_adapters(enabled)

    def __call__(self, model: T2IModel, noisy: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        # inference mode (no autograd bookkeeping at all); the clone, outside it, is an ordinary
        # tensor the loss may combine with the policy's
        with torch.inference_mode(), self.active(model):
            pred = (self.predict or model.predict)(noisy, t, cond)
        return pred.clone()


def compile_policy_and_reference(unet, reference: Reference, mode: str | None = None) -> None:
    """Regional torch.compile of the policy UNet and, in full mode, of the reference copy, in
    torch.compile's ``mode`` (None: its default)."""
    for module in (unet, reference.copy):
        if module is not None:
            compile_blocks(module, mode=mode)


class MasterWeights:
    """fp32 master copies of bf16 trainable weights ("Mixed precision training", Micikevicius et
    al. 2018): the UNet computes in bf16 without autocast, the optimizer updates the fp32 copies
    (``self.master``, build the optimizer on these), and each step's result is rounded back into
    the UNet.  ``grads_to_master`` before clipping, ``master_to_model`` after ``optimizer.step``.
    Gradients accumulate in bf16 over micro-batches (as DDP reduces them)."""

    def __init__(self, named_params):
        self.names, self.params = zip(*[(n, p) for n, p in named_params if p.requires_grad])
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]

    @torch.no_grad()
    def grads_to_master(self) -> None:
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        torch._foreach_copy_(list(self.params), self.master)  # rounds to the model's dtype

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.detach() for n, m in zip(self.names, self.master)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"master weights lack {len(missing)} parameter(s), e.g. {missing[0]}")
        for n, m in zip(self.names, self.master):
            m.copy_(state[n])
        self.master_to_model()


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming (what checkpoints hold)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state_dict(unet, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"checkpoint LoRA has keys the UNet does not: {unexpected[:3]}")


def save_lora(unet, out: str | Path, family: str) -> Path:
    """Write ``out/pytorch_lora_weights.safetensors`` in diffusers' format with the adapter's
    config as metadata (so alpha survives), loadable by ``pipeline.load_lora_weights(out)`` of the
    ``family``'s pipeline (``unet.*`` keys; SD3: ``transformer.*``)."""
    from diffusers.utils import convert_state_dict_to_diffusers

    from scdpo.models.families import get_family

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers({k: v.float().cpu() for k, v in lora_state_dict(unet).items()})
    with tempfile.TemporaryDirectory(dir=out, prefix=".lora-") as tmp:
        get_family(family).save_lora_weights(tmp, layers, LORA_FILE, unet.peft_config["default"].to_dict())
        os.chmod(Path(tmp) / LORA_FILE, 0o666 & ~current_umask())
        os.replace(Path(tmp) / LORA_FILE, out / LORA_FILE)
    return out / LORA_FILE


def save_unet(unet, out: str | Path) -> Path:
    """Write a full diffusers UNet into the folder ``out``: each file is written beside it and
    renamed into place, and only the files diffusers writes for a UNet (``config.json``,
    ``diffusion_pytorch_model*``) are replaced, so anything else a user keeps in ``out`` stays."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        unet.save_pretrained(tmp)
        written = {f.name for f in tmp.iterdir()}
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~current_umask())  # mkdtemp's folder is private, its files need not be
            os.replace(f, out / f.name)
        for stale in out.glob("diffusion_pytorch_model*"):  # another sharding's leftovers, ours by name
            if stale.name not in written:
                stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_pipeline(base: str, out: str | Path, *, lora_dir: str | Path | None = None, unet=None,
                    device=None) -> Path:
    """A whole pipeline folder: the base model (fp32) with the LoRA in ``lora_dir`` fused in by
    plain diffusers (``load_lora_weights`` + ``fuse_lora``), or with ``unet`` (full fine-tuning)."""
    model = T2IModel.from_pretrained(base, device=device or "cpu", dtype=torch.float32)
    if unet is not None:
        model.unet = copy.deepcopy(unet).to(model.device, torch.float32)
    pipe = model.to_pipeline()
    if lora_dir is not None:
        pipe.load_lora_weights(str(lora_dir), weight_name=LORA_FILE)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        model.unet = getattr(pipe, model.adapter.denoiser)
    return model.save_pretrained(out)
