"""A batch's text conditioning, the one type every denoiser call takes (its own module, so the
graphs and the sampler need not import the model class)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Conditioning"]


@dataclass
class Conditioning:
    """Text conditioning for a batch: ``context`` (B, T, D) for cross-attention and, for SDXL and
    SD3, the pooled text embedding ``pooled`` (B, D2), and for SDXL the size/crop ids
    ``add_time_ids`` (B, 6)."""

    context: torch.Tensor
    pooled: torch.Tensor | None = None
    add_time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.context.shape[0]

    @property
    def added_cond_kwargs(self) -> dict | None:
        """The UNet's ``added_cond_kwargs`` (SDXL), or None."""
        if self.pooled is None or self.add_time_ids is None:
            return None
        return {"text_embeds": self.pooled, "time_ids": self.add_time_ids}

    @classmethod
    def cat(cls, conds: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension (e.g. ``[uncond, cond]`` or ``[c, c]`` for a DPO pair)."""
        def join(name):
            parts = [getattr(c, name) for c in conds]
            return None if parts[0] is None else torch.cat(parts)
        return cls(join("context"), join("pooled"), join("add_time_ids"))

    def to(self, device=None, dtype=None) -> Conditioning:
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return Conditioning(move(self.context), move(self.pooled), move(self.add_time_ids))
