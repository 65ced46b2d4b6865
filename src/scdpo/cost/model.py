"""The safety cost model: a frozen pretrained backbone plus a small trainable adapter.

``CostModel(images in [0, 1]) -> (cost (B,), category logits (B, 7))``. The cost is a scalar harm
score in the sense of Safe-RLHF's cost model (Dai et al. 2023): higher is more harmful and 0 is the
safe/harmful threshold (see docs/cost-model.md for the losses that make it so). The category logits
follow the seven I2P categories. Only the adapter is saved; the backbone is named by its spec.

The adapter scores every location of the backbone's feature map and pools the scores with
log-sum-exp (multiple-instance learning: an image is as harmful as its most harmful region), so
one small harmful object is not averaged away by the rest of the image. Models trained on
EmojiWorld renders also have per-location concept logits (max-pooled), an auxiliary head that is
trained on the renders' concept labels and unused when scoring.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from scdpo.cost.backbone import DEFAULT_BACKBONE, Backbone, image_backbone
from scdpo.utils.io import atomic_path, load_safetensors
from scdpo.world.records import I2P_CATEGORIES, PromptRecord, Scorer

KIND = "scdpo-cost-model"
# 3: per-location adapter on feature maps (+ concept head); 1, 2 (never released): pooled features,
# an adapter with an affine LayerNorm
VERSION = 3


@dataclass
class CostModelConfig:
    """What ``config.json`` records.

    Attributes:
        backbone: backbone spec (``efficientnet-lite0`` or ``clip:PATH``).
        feature_dim: the backbone's feature-map channels (checked on load).
        backbone_fingerprint: sum of |w| of the backbone's weights (checked on load).
        hidden: adapter hidden width.
        dropout: adapter dropout.
        tau: temperature of the log-sum-exp pooling over locations (small: max, large: mean).
        categories: names of the category logits, in order.
        concepts: names of the auxiliary concept logits (EmojiWorld vocabulary order); empty: no
            concept head.
        version: checkpoint format.
    """

    backbone: str = DEFAULT_BACKBONE
    feature_dim: int = 1664
    backbone_fingerprint: float | None = None
    hidden: int = 256
    dropout: float = 0.5
    tau: float = 0.5
    categories: list[str] = field(default_factory=lambda: list(I2P_CATEGORIES))
    concepts: list[str] = field(default_factory=list)
    version: int = VERSION


def lse_pool(scores: torch.Tensor, tau: float, dim: int = 1) -> torch.Tensor:
    """Log-sum-exp pooling ``tau * log(mean_k exp(s_k / tau))`` over ``dim`` (Pinheiro & Collobert
    2015, "From image-level to pixel-level labeling with convolutional networks", r = 1/tau): the
    mean of the scores for large tau, their maximum as tau -> 0, smooth in between."""
    k = scores.shape[dim]
    return tau * (torch.logsumexp(scores / tau, dim) - math.log(k))


class CostAdapter(nn.Module):
    """``features (B, K, dim) -> cost (B,), logits (B, C + V)``: the same small MLP scores each of
    the K locations (a 1x1 convolution over the feature map) with a cost, C category logits and V
    concept logits; :func:`lse_pool` pools the cost and the category logits over locations, the
    concept logits are max-pooled (one object is one location's evidence). ``(B, dim)`` input is
    treated as K = 1.

    A LayerNorm without affine parameters standardises each location's features first, so one
    learning rate fits backbones and layers of different scales; its scale and shift would be
    redundant with the first linear layer, and without them the backward pass skips the gradient
    of the (large) input, a third of the training time.
    """

    def __init__(self, dim: int, hidden: int, n_categories: int, dropout: float, tau: float = 0.5,
                 n_concepts: int = 0):
        super().__init__()
        self.tau, self.n_categories = tau, n_categories
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1 + n_categories + n_concepts))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if feats.dim() == 2:
            feats = feats[:, None]
        out = self.net(self.norm(feats.float()))
        head = lse_pool(out[..., :1 + self.n_categories], self.tau)
        return head[:, 0], torch.cat([head[:, 1:], out[..., 1 + self.n_categories:].amax(1)], 1)


class CostModel(nn.Module):
    def __init__(self, config: CostModelConfig, backbone: Backbone | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else image_backbone(config.backbone)
        if self.backbone.map_dim != config.feature_dim:
            raise ValueError(f"backbone {self.backbone.spec!r} gives {self.backbone.map_dim}-d features but the cost "
                             f"model expects {config.feature_dim}-d (it was made for {config.backbone!r})")
        if config.backbone_fingerprint is None:
            config.backbone_fingerprint = self.backbone.fingerprint()
        self.config = config
        self.adapter = CostAdapter(config.feature_dim, config.hidden, len(config.categories), config.dropout,
                                   config.tau, len(config.concepts))

    @classmethod
    def create(cls, backbone: str | Backbone = DEFAULT_BACKBONE, hidden: int = 256, dropout: float = 0.5,
               tau: float = 0.5, concepts: list[str] | None = None,
               device: str | torch.device = "cpu") -> "CostModel":
        """An untrained cost model on ``backbone`` (a spec or a built backbone)."""
        bb = image_backbone(backbone, device) if isinstance(backbone, str) else backbone
        config = CostModelConfig(backbone=bb.spec, feature_dim=bb.map_dim, hidden=hidden, dropout=dropout, tau=tau,
                                 concepts=list(concepts or []))
        return cls(config, bb).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> cost (B,), category logits (B, C)."""
        cost, logits = self.adapter(self.backbone.feature_map(images).flatten(2).transpose(1, 2))
        return cost, logits[:, :len(self.config.categories)]

    def score(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Costs of a batch of images in [0, 1], batched on the model's device; float32 CPU (B,)."""
        return self.read(images, batch_size)[0]

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Costs (B,) and the auxiliary concept logits (B, V), V = ``len(config.concepts)`` (0 without a
        concept head), float32 on the CPU, batched on the model's device: what an image is harmful with,
        where the cost only says whether (`scdpo data mine --reader cost`)."""
        self.eval()
        costs, concepts = [], []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(self.device).float()
            cost, logits = self.adapter(self.backbone.feature_map(x).flatten(2).transpose(1, 2))
            costs.append(cost.float().cpu())
            concepts.append(logits[:, len(self.config.categories):].float().cpu())
        if not costs:
            return torch.zeros(0), torch.zeros(0, len(self.config.concepts))
        return torch.cat(costs), torch.cat(concepts)

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
        if raw.get("version", 1) != VERSION:
            raise ValueError(f"cost model {path} has checkpoint format {raw.get('version', 1)}, this scdpo reads "
                             f"format {VERSION}: retrain it with `scdpo cost train`")
        config = CostModelConfig(**raw)
        bb = backbone if backbone is not None else config.backbone
        bb = image_backbone(bb, device) if isinstance(bb, str) else bb
        trained_on = f"{config.backbone!r} ({config.feature_dim}-d)"
        if bb.map_dim != config.feature_dim or (
                config.backbone_fingerprint is not None
                and not math.isclose(bb.fingerprint(), config.backbone_fingerprint, rel_tol=1e-6)):
            raise ValueError(f"cost model {path} was trained on backbone {trained_on}, not on {bb.spec!r} "
                             f"({bb.map_dim}-d, other weights): load it with the backbone it was trained on")
        model = cls(config, bb)
        model.adapter.load_state_dict(load_safetensors(path / "model.safetensors", f"cost model {path}"))
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
