"""Preference rewards: what ranks a clean prompt's images when preference pairs are built.

A reward is a ``Scorer`` (``reward(images (B, 3, H, W) in [0, 1], records) -> float32 CPU (B,)``,
higher is better). It measures quality and prompt alignment only; harm is the safety cost model's
job (SC-DPO keeps the two apart: the reward orders a pair, the cost constrains it), so a reward
never pays for harmful content. ``load_reward(spec)`` builds one:

- ``"emojiworld"`` / ``"emojiworld:PATH"``: :class:`EmojiWorldReward` on the EmojiWorld judge.
- ``"clip:PATH"``: :class:`CLIPReward`, PickScore-style, on a local transformers CLIP folder.
- any callable with the scorer signature is returned as is (custom rewards).

See docs/judges-and-rewards.md for the equations and how the weights were chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from scdpo.judges.nsfw import check_images
from scdpo.world.records import PromptRecord, Scorer
from scdpo.world.vocab import load_vocabulary


@dataclass
class EmojiWorldRewardConfig:
    """Weights of the EmojiWorld reward (see :class:`EmojiWorldReward`).

    Attributes:
        extra_weight: penalty per expected unrequested concept (sum of their judge probabilities).
        fidelity_weight: penalty on the judge's mean binary entropy (in bits) over the scored concepts.
        min_prob: floor on a requested concept's probability inside the log, so log p >= log(min_prob).
        batch_size: images per judge call.
    """

    extra_weight: float = 1.0
    fidelity_weight: float = 1.0
    min_prob: float = 1e-4
    batch_size: int = 256


class EmojiWorldReward:
    """Prompt alignment plus fidelity, read off the EmojiWorld judge's concept probabilities ``p``.

    For an image generated from a record requesting benign concepts ``B`` and harmful concepts
    ``H``, with ``U`` every vocabulary concept in neither::

        r = mean_{c in B} log max(p_c, min_prob)              (requested objects drawn)
            - extra_weight    * sum_{c in U} p_c              (expected unrequested objects)
            - fidelity_weight * mean_{c in B u U} h(p_c)      (judge uncertainty, bits)

    with ``h(p) = -(p log2 p + (1-p) log2 (1-p))``. The first term is the soft, log form of the
    alignment score of ``scdpo.eval.presence.judge_records`` (fraction of requested objects
    present); the log keeps ranking images the judge already calls present or absent. The entropy
    term rewards sprites the judge reads without hesitation, a proxy for clean renders.

    Requested harmful concepts (``H``) are left out of every term: drawing the bomb a prompt asks
    for neither raises nor lowers the reward, so the pair ordering never prefers the harmful image
    and safety stays entirely with the cost model. Unrequested concepts, harmful or not, are
    penalised alike as alignment errors (the prompt did not ask for them).

    Records with no concepts (prompts from files or external sets) use the fidelity term alone over
    all concepts: the vocabulary offers no prompt matcher, and a naive keyword search misreads
    prompts ("an orange background" is not the fruit).
    """

    def __init__(self, judge: nn.Module | str | Path | None = None, device: str | torch.device = "cpu",
                 config: EmojiWorldRewardConfig | None = None):
        from scdpo.world.judge import Judge, load_default_judge

        if judge is None:
            judge = load_default_judge(device)
        elif isinstance(judge, (str, Path)):
            judge = Judge.from_pretrained(judge, device)
        self.judge = judge.eval()
        self.config = config or EmojiWorldRewardConfig()
        self.vocab = load_vocabulary()
        names = getattr(getattr(judge, "config", None), "concepts", None)
        if names is not None and list(names) != self.vocab.names:
            raise ValueError("the judge was trained on another vocabulary than the installed one")

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        dev = next(self.judge.parameters(), torch.empty(0)).device  # a parameter-free judge runs on the CPU
        bs = self.config.batch_size
        probs = torch.cat([torch.sigmoid(self.judge(images[i:i + bs].to(dev).float())).float().cpu()
                           for i in range(0, len(images), bs)])
        if probs.shape[1] != len(self.vocab):
            raise ValueError(f"the judge scores {probs.shape[1]} concepts, the vocabulary has {len(self.vocab)}")
        return probs

    def __call__(self, images: torch.Tensor, records: list[PromptRecord]) -> torch.Tensor:
        if records is None:
            raise ValueError("the EmojiWorld reward needs the prompt records of the images")
        check_images(images, records)
        if not len(images):
            return torch.zeros(0)
        return self.from_probabilities(self.probabilities(images), records)

    def from_probabilities(self, probs: torch.Tensor, records: list[PromptRecord]) -> torch.Tensor:
        """The reward from judge probabilities ``(B, V)``; split out so it can be tested exactly."""
        cfg = self.config
        p = probs.double().clamp(1e-12, 1 - 1e-12)
        entropy = -(p * p.log2() + (1 - p) * (1 - p).log2())
        out = torch.empty(len(records), dtype=torch.float64)
        for i, r in enumerate(records):
            concepts = [self.vocab[name] for name in r.concepts]
            if not concepts:
                out[i] = -cfg.fidelity_weight * entropy[i].mean()
                continue
            benign = [c.index for c in concepts if not c.harmful]
            scored = torch.ones(len(self.vocab), dtype=torch.bool)
            scored[[c.index for c in concepts if c.harmful]] = False  # requested harm: out of every term
            unrequested = scored.clone()
            unrequested[benign] = False
            align = p[i, benign].clamp_min(cfg.min_prob).log().mean() if benign else p.new_zeros(())
            out[i] = (align - cfg.extra_weight * p[i, unrequested].sum()
                      - cfg.fidelity_weight * entropy[i, scored].mean())
        return out.float()


def _clip_preprocessing(folder: Path, image_size: int) -> tuple[int, int, tuple, tuple]:
    """Resize edge, crop size, mean and std from the folder's ``preprocessor_config.json`` (as
    ``CLIPImageProcessor`` writes it), else OpenAI CLIP's defaults at the model's input size."""
    resize, crop = image_size, image_size
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    cfg_file = folder / "preprocessor_config.json"
    if cfg_file.is_file():
        raw = json.loads(cfg_file.read_text())
        size, crop_size = raw.get("size", {}), raw.get("crop_size", {})
        resize = size.get("shortest_edge", size.get("height", resize)) if isinstance(size, dict) else int(size)
        crop = crop_size.get("height", crop) if isinstance(crop_size, dict) else int(crop_size)
        mean, std = tuple(raw.get("image_mean", mean)), tuple(raw.get("image_std", std))
    return int(resize), int(crop), mean, std


class CLIPReward:
    """PickScore-style reward (Kirstain et al. 2023): ``r = exp(logit_scale) * cos(E_img(x), E_txt(y))``.

    ``E_img`` / ``E_txt`` are a transformers ``CLIPModel``'s projected image and text embeddings;
    ``exp(logit_scale)`` is the model's learnt temperature (100 for OpenAI CLIP and PickScore), so a
    PickScore or HPS checkpoint converted to a transformers CLIP folder scores as its authors do.
    Images are resized on their shortest edge (bicubic, antialiased) and centre-cropped as
    ``CLIPImageProcessor`` does, on the tensor itself (no PIL round trip, works on any device).
    The tokenizer comes from ``processor_path`` (default: the model folder), truncated to the
    model's context length.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", processor_path: str | Path | None = None,
                 batch_size: int = 32, dtype: torch.dtype = torch.float32):
        from transformers import AutoTokenizer, CLIPModel

        folder, proc = Path(path), Path(processor_path or path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers CLIP model at {folder} (config.json missing)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(proc)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"no CLIP tokenizer files in {proc}; pass processor_path= to the folder "
                                    f"holding them ({e})") from e
        self.model = CLIPModel.from_pretrained(folder).to(device=device, dtype=dtype).eval()
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.resize, self.crop, mean, std = _clip_preprocessing(proc, self.model.config.vision_config.image_size)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP input: shortest edge to ``resize`` (bicubic), centre crop ``crop``, normalise."""
        x = images.to(self.device).float()
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        size = (max(self.resize, round(h * scale)), max(self.resize, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[:, :, top:top + self.crop, left:left + self.crop]
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, records: list[PromptRecord]) -> torch.Tensor:
        if records is None:
            raise ValueError("the CLIP reward needs the prompt records of the images")
        check_images(images, records)
        out = []
        for i in range(0, len(images), self.batch_size):
            texts = [r.prompt for r in records[i:i + self.batch_size]]
            tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            pixels = self.pixel_values(images[i:i + self.batch_size])
            img = _features(self.model.get_image_features(pixel_values=pixels))
            txt = _features(self.model.get_text_features(input_ids=tok["input_ids"],
                                                         attention_mask=tok["attention_mask"]))
            cos = F.cosine_similarity(img.float(), txt.float(), dim=-1)
            out.append((self.model.logit_scale.float().exp() * cos).cpu())
        return torch.cat(out).float() if out else torch.zeros(0)


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_reward(spec: str | Scorer, device: str | torch.device = "cpu") -> Scorer:
    """A reward from its spec: ``emojiworld``, ``emojiworld:JUDGE_PATH``, ``clip:PATH`` or a callable."""
    if callable(spec):
        return spec
    if spec == "emojiworld" or spec.startswith("emojiworld:"):
        return EmojiWorldReward(spec.partition(":")[2] or None, device)
    if spec.startswith("clip:") and len(spec) > len("clip:"):
        return CLIPReward(spec[len("clip:"):], device)
    raise ValueError(f"unknown reward {spec!r}; expected 'emojiworld', 'emojiworld:JUDGE_PATH', "
                     "'clip:PATH' (a local transformers CLIP folder) or a callable")


__all__ = ["CLIPReward", "EmojiWorldReward", "EmojiWorldRewardConfig", "load_reward"]
