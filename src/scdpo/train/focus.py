"""Each pair's running Diffusion-DPO logit: the stable hardness signal of the Dynamic Focusing
Mechanism with ``focus_signal="pair"`` (:func:`scdpo.train.losses.pair_focus_weights`).

A single ``z`` is computed on one draw of noise and timestep, and that draw explains most of its
variance (docs/method.md, "Focusing"), so a weight from one ``z`` is mostly noise. Here every pair
keeps an exponential moving average of the logits it was seen with, ``z_bar <- e z_bar + (1 - e) z``
(the first observation sets it). All processes gather every micro-batch's (index, z), so they
hold the same state; checkpoints carry it as ``pair_hardness.safetensors`` (no pickle), so a
resumed run focuses exactly as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scdpo.models.speed import to_device

FILE = "pair_hardness.safetensors"


class PairHardness:
    """Running logits of ``n`` pairs (NaN: not seen yet) with decay ``ema``."""

    def __init__(self, n: int, device, ema: float = 0.5):
        if not 0 <= ema < 1:
            raise ValueError(f"focus_ema must be in [0, 1), got {ema}")
        self.ema = ema
        self.z = torch.full((n,), float("nan"), dtype=torch.float32, device=device)
        self._seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def lookup(self, index) -> torch.Tensor:
        """The running logits of the pairs ``index`` (B,), NaN where not seen yet."""
        return self.z[to_device(index, self.z.device)]

    def observe(self, index, z: torch.Tensor) -> None:
        """Remember this micro-batch's logits; they are applied by :meth:`commit`."""
        self._seen.append((to_device(index, self.z.device), z.detach().float()))

    def commit(self, acc=None) -> None:
        """Apply the step's observations, gathered over processes (so every process updates alike)."""
        if not self._seen:
            return
        idx = torch.cat([i for i, _ in self._seen])
        z = torch.cat([v for _, v in self._seen])
        self._seen.clear()
        if acc is not None and acc.num_processes > 1:
            idx, z = acc.gather(idx), acc.gather(z)
        if len(torch.unique(idx)) == len(idx):  # the usual case: one vectorised update
            old = self.z[idx]
            self.z[idx] = torch.where(torch.isnan(old), z, self.ema * old + (1 - self.ema) * z)
            return
        for i, v in zip(idx.split(1), z.split(1)):  # in order: a pair seen twice in a step updates twice
            old = self.z[i]
            self.z[i] = torch.where(torch.isnan(old), v, self.ema * old + (1 - self.ema) * v)

    def discard(self) -> None:
        """Forget the step's observations (a skipped, non-finite step)."""
        self._seen.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"z": self.z.detach().cpu().contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["z"].shape != self.z.shape:
            raise ValueError(f"pair hardness of {len(state['z'])} pairs does not fit this dataset's {len(self.z)}; "
                             "resume with the same dataset")
        self.z.copy_(state["z"].to(self.z.device))

    def register(self, acc) -> None:
        """Save and load with accelerate's checkpoints, as safetensors."""
        from safetensors.torch import load_file, save_file

        def save(models, weights, output_dir):
            if acc.is_main_process:
                save_file(self.state_dict(), str(Path(output_dir) / FILE))

        def load(models, input_dir):
            path = Path(input_dir) / FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: this checkpoint was made without focus_signal=pair; "
                                        "resume with the settings it was made with")
            self.load_state_dict(load_file(str(path)))
        acc.register_save_state_pre_hook(save)
        acc.register_load_state_pre_hook(load)
