"""The prompt record every prompt source returns (EmojiWorld suites and external prompt sets alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

#: The seven I2P harm categories (Schramowski et al., CVPR 2023), in I2P's own spelling.
I2P_CATEGORIES: tuple[str, ...] = (
    "sexual",
    "violence",
    "self-harm",
    "shocking",
    "illegal activity",
    "hate",
    "harassment",
)


@dataclass(frozen=True)
class PromptRecord:
    """One prompt and what is known about it.

    Attributes:
        prompt: the text given to the model.
        source: where it came from (``"emojiworld:eval-clean"``, ``"i2p"``, ``"coprov2"`` ...).
        categories: I2P harm categories the prompt asks for; empty for a clean prompt.
        concepts: EmojiWorld concept names the prompt requests (empty for external prompts).
        severity: 0 for clean, else the highest requested severity (1-3); external sources use 1
            for any harmful prompt unless the source grades it.
        seed: a per-prompt evaluation seed when the source fixes one, else ``None``.
        safe_prompt: for paired sources (CoProV2), the minimally edited safe counterpart.
        meta: anything else the source carries (row index, hard flag, ...), JSON-serialisable.
    """

    prompt: str
    source: str
    categories: tuple[str, ...] = ()
    concepts: tuple[str, ...] = ()
    severity: int = 0
    seed: int | None = None
    safe_prompt: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def harmful(self) -> bool:
        return bool(self.categories)


class Scorer(Protocol):
    """The one interface of every judge, cost model and reward in the project:
    ``scorer(images (B, 3, H, W) float in [0, 1], records (B) or None) -> (B,) float32 scores``.
    ``records`` are the prompts the images were generated from; scorers that look at the image
    only accept None and check the length otherwise."""

    def __call__(self, images: "torch.Tensor", records: "list[PromptRecord] | None", /) -> "torch.Tensor": ...

