"""What the erasure baselines share: concept lists and their output folder's record."""

from __future__ import annotations

import json
from pathlib import Path

from scdpo.utils.io import atomic_write_text


def split_concepts(text: str | None) -> list[str] | None:
    """``"gun, blood; knife"`` -> ``["gun", "blood", "knife"]`` (commas or semicolons); None stays None."""
    if text is None:
        return None
    items = [c.strip() for c in text.replace(";", ",").split(",") if c.strip()]
    if not items:
        raise ValueError(f"no concepts in {text!r}; give them comma-separated, e.g. --concepts \"gun, blood\"")
    return items


def safe_concepts(model) -> list[str]:
    """Concepts to preserve by default: EmojiWorld's safe concepts, none for other models."""
    from scdpo.models.guards.base import is_emojiworld

    if not is_emojiworld(model):
        return []
    from scdpo.world.vocab import load_vocabulary

    return [c.name for c in load_vocabulary().safe]


def write_record(out: str | Path, record: dict) -> None:
    """``out/baseline.json``: the method, its settings and what it measured while running."""
    atomic_write_text(Path(out) / "baseline.json", json.dumps(record, indent=1))


def lora_modules(unet) -> dict[str, object]:
    """Module name -> peft LoRA layer (modules that carry ``lora_A``)."""
    return {n: m for n, m in unet.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
