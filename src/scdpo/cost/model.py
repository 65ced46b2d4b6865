"""The safety cost model: a frozen pretrained backbone plus a small trainable adapter.

``CostModel(images in [0, 1]) -> (cost (B,), category logits (B, 7))``. The cost is a scalar harm
score in the sense of Safe-RLHF's cost model (Dai et al. 2023): higher is more harmful and 0 is the
safe/harmful threshold (see docs/cost-model.md for the losses that make it so). The category logits
follow the seven I2P categories. Only the adapter is saved; the backbone is named by its spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from scdpo.cost.backbone import DEFAULT_BACKBONE, Backbone, image_backbone
from scdpo.utils.io import atomic_path
from scdpo.world.records import I2P_CATEGORIES, PromptRecord

KIND = "scdpo-cost-model"
Scorer = Callable[[torch.Tensor, "list[PromptRecord] | None"], torch.Tensor]


@dataclass
class CostModelConfig:
    """What ``config.json`` records.

    Attributes:
        backbone: backbone spec (``efficientnet-lite0`` or ``clip:PATH``).
        feature_dim: the backbone's feature size (checked on load).
        backbone_fingerprint: sum of |w| of the backbone's weights (checked on load).
        hidden: adapter hidden width.
        dropout: adapter dropout.
        categories: names of the category logits, in order.
    """

    backbone: str = DEFAULT_BACKBONE
    feature_dim: int = 1280
    backbone_fingerprint: float | None = None
    hidden: int = 256
    dropout: float = 0.1
    categories: list[str] = field(default_factory=lambda: list(I2P_CATEGORIES))


class CostAdapter(nn.Module):
    """``features (B, dim) -> (B, 1 + C)``: LayerNorm, one hidden GELU layer, linear out.

    The LayerNorm makes one learning rate work for backbones whose features have different scales.
    """

    def __init__(self, dim: int, hidden: int, n_categories: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1 + n_categories))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(feats)
        return out[:, 0], out[:, 1:]


class CostModel(nn.Module):
    def __init__(self, config: CostModelConfig, backbone: Backbone | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else image_backbone(config.backbone)
        if self.backbone.dim != config.feature_dim:
            raise ValueError(f"backbone {self.backbone.spec!r} gives {self.backbone.dim}-d features but the cost "
                             f"model expects {config.feature_dim}-d (it was made for {config.backbone!r})")
        if config.backbone_fingerprint is None:
            config.backbone_fingerprint = self.backbone.fingerprint()
        self.config = config
        self.adapter = CostAdapter(config.feature_dim, config.hidden, len(config.categories), config.dropout)

    @classmethod
    def create(cls, backbone: str | Backbone = DEFAULT_BACKBONE, hidden: int = 256, dropout: float = 0.1,
               device: str | torch.device = "cpu") -> "CostModel":
        bb = image_backbone(backbone, device) if isinstance(backbone, str) else backbone
        return cls(CostModelConfig(backbone=bb.spec, feature_dim=bb.dim, hidden=hidden, dropout=dropout), bb).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.adapter(self.backbone(images))

    @torch.no_grad()
    def score(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Costs of a batch of images in [0, 1], batched on the model's device; float32 CPU (B,)."""
        self.eval()
        out = [self(images[i:i + batch_size].to(self.device).float())[0].float().cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``model.safetensors`` (the adapter only) and ``config.json``, each atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.adapter.state_dict().items()}, str(tmp))
        with atomic_path(path / "config.json") as tmp:
            tmp.write_text(json.dumps({"kind": KIND, **asdict(self.config)}, indent=1))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        backbone: str | Backbone | None = None) -> "CostModel":
        """Load a saved cost model; ``backbone`` overrides the recorded spec (e.g. a moved CLIP
        folder) but must be the same network, or a ValueError says which one it was trained on."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"no cost model at {path} (config.json missing)")
        raw = json.loads(cfg_file.read_text())
        if raw.pop("kind", None) != KIND:
            raise ValueError(f"{path} is not a scdpo cost model checkpoint (config.json kind is not {KIND!r})")
        config = CostModelConfig(**raw)
        bb = backbone if backbone is not None else config.backbone
        bb = image_backbone(bb, device) if isinstance(bb, str) else bb
        trained_on = f"{config.backbone!r} ({config.feature_dim}-d)"
        if bb.dim != config.feature_dim or (
                config.backbone_fingerprint is not None
                and not math.isclose(bb.fingerprint(), config.backbone_fingerprint, rel_tol=1e-6)):
            raise ValueError(f"cost model {path} was trained on backbone {trained_on}, not on {bb.spec!r} "
                             f"({bb.dim}-d, other weights): load it with the backbone it was trained on")
        model = cls(config, bb)
        model.adapter.load_state_dict(load_file(str(path / "model.safetensors"), device="cpu"))
        return model.to(device).eval()


def load_cost_scorer(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64) -> Scorer:
    """The shared scorer interface over a saved cost model.

    ``scorer(images (B, 3, H, W) in [0, 1], records) -> float32 CPU (B,)`` costs: higher is more
    harmful, 0 is the safe/harmful threshold. The cost depends on the image only; ``records`` (the
    prompts the images were generated from) may be ``None`` and are only checked for length.
    """
    model = CostModel.from_pretrained(path, device)

    def scorer(images: torch.Tensor, records: list[PromptRecord] | None = None) -> torch.Tensor:
        if records is not None and len(records) != len(images):
            raise ValueError(f"cost scorer got {len(images)} images but {len(records)} prompt records")
        return model.score(images, batch_size)

    scorer.model = model  # for callers that want the category logits too
    return scorer
