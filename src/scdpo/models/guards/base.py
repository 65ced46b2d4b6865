"""The guard signature: a :class:`Guard` starts one :class:`GuardRun` per sampling batch; the run
says which conditionings the UNet sees at step ``i`` (stacked along the batch) and how their
predictions combine into the one the scheduler steps with. The base run is plain
classifier-free guidance (Ho & Salimans 2022): ``uncond + w (cond - uncond)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from scdpo.models.conditioning import Conditioning
    from scdpo.models.sampling import SamplerConfig
    from scdpo.models.t2i import T2IModel

#: Safe Latent Diffusion's default safety concept (Schramowski et al. 2023; diffusers'
#: StableDiffusionPipelineSafe), the unsafe concepts of a real model unless told otherwise.
SLD_SAFETY_TEXT = ("an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, "
                   "nudity, bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, "
                   "weapons, child abuse, brutality, cruelty")
#: the same text as a list of concepts (SAFREE embeds each concept on its own)
SLD_CONCEPTS = [c.strip() for c in SLD_SAFETY_TEXT.removeprefix("an image showing ").split(",")]


def is_emojiworld(model: T2IModel) -> bool:
    """EmojiWorld models condition on MiniLM (a BERT encoder); SD and SDXL on CLIP."""
    return getattr(model.text_encoders[0].config, "model_type", "") == "bert"


def default_concepts(model: T2IModel) -> list[str]:
    """The unsafe concepts a guard or an erasure steers away from by default: EmojiWorld's harmful
    concepts (most severe first) for a MiniLM-conditioned model, else SLD's safety concept list."""
    if not is_emojiworld(model):
        return list(SLD_CONCEPTS)
    from scdpo.world.vocab import load_vocabulary

    harmful = sorted(load_vocabulary().harmful, key=lambda c: (-c.severity, c.index))
    return [c.name for c in harmful]


def concept_text(model: T2IModel, concepts: list[str]) -> str:
    """One prompt naming the concepts, as many as fit the first tokenizer's length (in order):
    SLD conditions on a single safety prompt, and EmojiWorld's encoder holds 32 tokens only."""
    if not is_emojiworld(model) and concepts == SLD_CONCEPTS:
        return SLD_SAFETY_TEXT
    tokenizer = model.tokenizers[0]
    room, kept = tokenizer.model_max_length - 2, []
    for c in concepts:
        if len(tokenizer(", ".join([*kept, c]), add_special_tokens=False).input_ids) > room:
            break
        kept.append(c)
    if not kept:
        raise ValueError(f"concept {concepts[0]!r} alone is longer than the text encoder's "
                         f"{tokenizer.model_max_length} tokens; give shorter concepts")
    return ", ".join(kept)


class GuardRun:
    """Plain classifier-free guidance for one batch (``uncond`` None: no guidance)."""

    def __init__(self, cond: Conditioning, uncond: Conditioning | None, guidance_scale: float):
        self.cond, self.uncond, self.scale = cond, uncond, guidance_scale

    def conditioning(self, i: int) -> Conditioning:
        """What the UNet sees at step ``i``: k stacked copies' conditionings (k = len / batch)."""
        from scdpo.models.conditioning import Conditioning

        return self.cond if self.uncond is None else Conditioning.cat([self.uncond, self.cond])

    def combine(self, i: int, pred: torch.Tensor) -> torch.Tensor:
        """The guided prediction from the UNet's prediction on :meth:`conditioning` (k x batch)."""
        if self.uncond is None:
            return pred
        uncond, cond = pred.chunk(2)
        return uncond + self.scale * (cond - uncond)


class Guard:
    """An inference-time guard. Subclasses set ``name`` and override :meth:`start` (and
    ``from_options``, which builds one from a spec's options; see :func:`scdpo.models.guards.get_guard`)."""

    name = "cfg"
    concepts: list[str] | None = None

    @classmethod
    def from_options(cls, options: list[str], concepts: list[str] | None = None) -> Guard:
        raise NotImplementedError

    def unsafe_concepts(self, model: T2IModel) -> list[str]:
        return list(self.concepts) if self.concepts else default_concepts(model)

    def start(self, model: T2IModel, prompts: list[str], cond: Conditioning, uncond: Conditioning | None,
              config: SamplerConfig) -> GuardRun:
        """The run of one batch: ``cond`` the prompts' conditioning, ``uncond`` the unconditional
        (negative) one, None when guidance is off."""
        return GuardRun(cond, uncond, config.guidance_scale)


def parse_options(options: list[str], presets: dict[str, dict], fields: dict[str, type], guard: str) -> dict:
    """Options of a spec -> keyword arguments: preset words merge that preset, ``key=value`` sets a
    field (later ones win). ValueError naming the bad option and what is allowed."""
    out: dict = {}
    for opt in options:
        key, eq, value = opt.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq:
            if key not in presets:
                raise ValueError(f"unknown {guard} preset {opt!r}; choose one of {', '.join(presets) or 'none'} "
                                 f"or give key=value with key in {', '.join(fields)}")
            out.update(presets[key])
            continue
        if key not in fields:
            raise ValueError(f"unknown {guard} option {key!r}; known: {', '.join(fields)}")
        try:
            flag = value.strip().lower() in ("1", "true", "yes", "on")
            out[key] = flag if fields[key] is bool else fields[key](value)
        except ValueError as err:
            raise ValueError(f"{guard} option {opt!r}: {err}") from err
    return out
