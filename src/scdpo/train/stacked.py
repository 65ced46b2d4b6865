"""Several LoRAs on one frozen UNet, each applied to its own rows of one batch (issue 16).

Six EmojiWorld trainings side by side, one process each, fill an H100 at 51.9 steps/s in all, 86% of
what one training step's device work allows (BENCHMARKS.md, "Thirty-third and thirty-fourth rounds"):
each of their UNet calls is too small to keep the GPU busy. :class:`StackedLoRA` replaces each LoRA
target ``nn.Linear`` of the UNet with the frozen layer plus R adapters, so R trainings make one UNet
call: rows ``k*n .. (k+1)*n - 1`` of the batch get run k's adapter,

    y = W x + (alpha / r) B_k A_k x      (Hu et al. 2021, eq. 3; peft's LoRA ``Linear.forward``),

computed for all runs at once as two batched matmuls. With ``Layout.blocks`` = m this run-major pattern
repeats m times over the batch: classifier-free guidance's ``[uncond; cond]`` makes two blocks, and so
every run's validation grid samples in one call (:meth:`scdpo.train.validate.Validator.many`). Rows
past ``m*R*n`` (a CUDA graph's padding) get ``W x`` alone. Each run's ``A_k``, ``B_k`` are leaf
tensors of their own, so every run has its own optimizer, gradient clipping and skipped steps, as a
training alone has.

The adapters start from peft's own initialisation (``add_lora`` under ``torch.manual_seed(seed)``, as
:func:`scdpo.train.trainer.train` draws it), and :func:`save_run` writes a run's adapter through peft
and diffusers, so a run trained here loads with ``load_lora_weights()`` like any other.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from scdpo.train import model as tm


@dataclass
class Layout:
    """How the next UNet call's rows map to runs, shared by every :class:`StackedLoRA` of a UNet:
    ``run`` set: every row gets that run's adapter; ``rows`` set: run k owns rows
    ``k*rows .. (k+1)*rows - 1`` of each of ``blocks`` blocks of R*rows rows (guided sampling: 2);
    neither: no adapter (the frozen reference)."""

    rows: int | None = None
    run: int | None = None
    blocks: int = 1


class StackedLoRA(nn.Module):
    """A frozen ``nn.Linear`` with R LoRA adapters, each on the rows its :class:`Layout` gives its run
    (module docstring). ``lora_A[k]``: (r, in), ``lora_B[k]``: (out, r), fp32 like peft's trainable adapters."""

    def __init__(self, base: nn.Linear, a: list[torch.Tensor], b: list[torch.Tensor], scaling: float,
                 layout: Layout):
        super().__init__()
        self.base, self.scaling, self.layout = base, scaling, layout
        self.lora_A = nn.ParameterList([nn.Parameter(t.detach().float().clone()) for t in a])
        self.lora_B = nn.ParameterList([nn.Parameter(t.detach().float().clone()) for t in b])

    def _delta(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # peft casts the input to the adapter's dtype; under autocast the matmul casts it straight back to
        # autocast's dtype, so the cast is skipped there (the same numbers, two kernels fewer a layer and pass)
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(a.dtype)
        return torch.matmul(torch.matmul(x, a.transpose(-1, -2)), b.transpose(-1, -2)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        lay = self.layout
        if lay.run is not None:
            return (y + self._delta(x, self.lora_A[lay.run], self.lora_B[lay.run])).to(y.dtype)
        if lay.rows is None:
            return y
        runs, blocks = len(self.lora_A), lay.blocks
        n = blocks * runs * lay.rows
        if x.shape[0] < n:
            times = "" if blocks == 1 else f"{blocks} blocks x "
            raise ValueError(f"a stacked LoRA call has {x.shape[0]} rows, fewer than {times}{runs} runs x "
                             f"{lay.rows}; set Layout.rows to the rows of one run (and blocks to the call's blocks)")
        # rows are run-major: run k's are contiguous (in each block); the adapters broadcast over the blocks,
        # and one block (the training step) keeps its shapes and kernels
        shape = (runs, -1, x.shape[-1]) if blocks == 1 else (blocks, runs, -1, x.shape[-1])
        delta = self._delta(x[:n].reshape(shape), torch.stack(list(self.lora_A)), torch.stack(list(self.lora_B)))
        delta = delta.reshape(*x[:n].shape[:-1], -1)
        out = y[:n] + delta if n == x.shape[0] else torch.cat([y[:n] + delta, y[n:]])
        return out.to(y.dtype)


def _targets(unet, targets: list[str]) -> list[str]:
    return [n for n, _ in unet.named_modules() if any(n == t or n.endswith("." + t) for t in targets)]


def _set(unet, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(unet.get_submodule(parent) if parent else unet, leaf, module)


def initial_adapters(unet, seed: int, rank: int, alpha: float, targets: list[str]) -> dict[str, torch.Tensor]:
    """The adapter a training of ``seed`` starts from, in peft's naming: peft's initialisation drawn
    after ``torch.manual_seed(seed)``, as the trainer draws it (loading the model draws nothing)."""
    torch.manual_seed(seed)
    tm.add_lora(unet, rank, alpha, targets)
    state = tm.lora_state_dict(unet)
    unet.unload_lora()
    return {k: v.clone() for k, v in state.items()}


def stack(unet, states: list[dict[str, torch.Tensor]], rank: int, alpha: float, targets: list[str]) -> Layout:
    """Replace every LoRA target of ``unet`` (each an ``nn.Linear``) by a :class:`StackedLoRA` holding
    one adapter per state (peft naming, :func:`initial_adapters`); freeze the rest. Returns the
    :class:`Layout` the layers read."""
    unet.requires_grad_(False)
    layout = Layout()
    names = _targets(unet, targets)
    for name in names:
        base = unet.get_submodule(name)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRA target {name} is a {type(base).__name__}; trainings in one process stack "
                             "adapters on Linear layers only: train them one process each (drop --together)")
        a = [s[f"{name}.lora_A.weight"] for s in states]
        b = [s[f"{name}.lora_B.weight"] for s in states]
        _set(unet, name, StackedLoRA(base, a, b, alpha / rank, layout).to(base.weight.device))
    return layout


def run_parameters(unet, run: int) -> list[torch.nn.Parameter]:
    """Run ``run``'s trainable tensors, in module order (A then B of each layer)."""
    return [p for m in unet.modules() if isinstance(m, StackedLoRA) for p in (m.lora_A[run], m.lora_B[run])]


def run_state(unet, run: int) -> dict[str, torch.Tensor]:
    """Run ``run``'s adapter in peft's naming (what the trainer's checkpoints hold)."""
    return {f"{name}.lora_{ab}.weight": getattr(m, f"lora_{ab}")[run].detach().contiguous()
            for name, m in unet.named_modules() if isinstance(m, StackedLoRA) for ab in "AB"}


@torch.no_grad()
def load_run_state(unet, run: int, state: dict[str, torch.Tensor]) -> None:
    for name, m in unet.named_modules():
        if isinstance(m, StackedLoRA):
            for ab in "AB":
                key = f"{name}.lora_{ab}.weight"
                if key not in state:
                    raise ValueError(f"the checkpoint's adapter lacks {key}; it is another run's")
                getattr(m, f"lora_{ab}")[run].copy_(state[key])


def unstack(unet) -> None:
    """Put the frozen Linear layers back (the adapters are dropped)."""
    for name, m in list(unet.named_modules()):
        if isinstance(m, StackedLoRA):
            _set(unet, name, m.base)


@contextlib.contextmanager
def rows_per_run(layout: Layout, rows: int | None = None, run: int | None = None, blocks: int = 1):
    """Set ``layout`` for a while (``rows`` and ``run`` None: the adapters off)."""
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    saved = (layout.rows, layout.run, layout.blocks)
    layout.rows, layout.run, layout.blocks = rows, run, blocks
    try:
        yield
    finally:
        layout.rows, layout.run, layout.blocks = saved


def save_run(unet, states: list[dict[str, torch.Tensor]], outs: list, rank: int, alpha: float, targets: list[str],
             family: str) -> None:
    """Write each run's adapter as the trainer does (:func:`scdpo.train.model.save_lora`): the UNet
    must be unstacked; each adapter is loaded into a peft adapter, saved and unloaded in turn."""
    for state, out in zip(states, outs):
        tm.add_lora(unet, rank, alpha, targets)
        tm.load_lora_state_dict(unet, state)
        tm.save_lora(unet, out, family)
        unet.unload_lora()
