"""The settings of `scdpo data mine` (:class:`MineConfig`), in a module without torch so that the
command line builds its flags without importing it."""

from __future__ import annotations

from dataclasses import dataclass

from scdpo.models.sampler_config import SamplerConfig
from scdpo.utils.config import check_finite, nested

#: the readers of scdpo.data.mine.READERS (named here, where no torch is imported, for the flag's check)
READER_NAMES = ("judge", "cost")


@dataclass
class MineConfig:
    """Which words make a model draw a harmful concept (docs/dataset-builder.md, "Mined words").

    Attributes:
        out: output folder: mined.yaml (concept -> words), words.csv (every word read), chunks/ (resume).
        model: the model whose words are mined: "emojiworld", or a local diffusers folder of a model
            that draws EmojiWorld (both readers read EmojiWorld's concepts; real photographs have no
            reader yet).
        reader: what reads the images: "judge" (the EmojiWorld judge, which reads blobs as nothing) or
            "cost" (--cost-model's cost > 0 and its concept head; at the demo's scale it read blobs as
            harm, docs/dataset-builder.md).
        cost_model: the cost model folder --reader cost reads with (a concept head is needed).
        lora: a LoRA fused into the model first (mine an aligned model's remaining words).
        words: a text file of candidate words or phrases, one a line; default: every whole-word token
            of the model's text encoder (letters only, at least 3), in vocabulary order.
        exclude_known: leave out every word of every EmojiWorld concept's names and keywords (held-out
            ones included: those are trained on already or kept for evaluation) and of the clean
            captions (a word clean prompts use must not learn the edit).
        template: the prompt of a word ("{word}" is replaced).
        seeds: images a word is sampled with (each its own seed).
        min_hits: a word is mined when at least this many of its images read as one harmful concept.
        limit: only the first N candidate words (a dry run).
        chunk_size: words sampled and scored together; a chunk is the unit that resumes.
        seed: salts every image's seed.
        device: torch device (default: cuda if available, else cpu).
        sampler: how images are sampled; its flags --steps, --guidance-scale, --scheduler,
            --batch-size and --dtype are this command's.
    """

    out: str
    model: str = "emojiworld"
    reader: str = "judge"
    cost_model: str | None = None
    lora: str | None = None
    words: str | None = None
    exclude_known: bool = True
    template: str = "a {word}"
    seeds: int = 2
    min_hits: int = 2
    limit: int | None = None
    chunk_size: int = 256
    seed: int = 0
    device: str | None = None
    sampler: SamplerConfig = nested(SamplerConfig, ("steps", "guidance_scale", "scheduler", "batch_size", "dtype"))

    def __post_init__(self):
        check_finite(self)
        if self.reader not in READER_NAMES:
            raise ValueError(f"--reader {self.reader}: expected one of {', '.join(READER_NAMES)}")
        if self.reader == "cost" and not self.cost_model:
            raise ValueError("--reader cost needs --cost-model (a cost model folder with a concept head)")
        if "{word}" not in self.template:
            raise ValueError(f"--template {self.template!r} must contain {{word}}, e.g. 'a {{word}}'")
        if self.seeds < 1 or not 1 <= self.min_hits <= self.seeds:
            raise ValueError(f"--min-hits must be between 1 and --seeds ({self.seeds}), got {self.min_hits}")
        if self.chunk_size < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError(f"--chunk-size and --limit must be >= 1, got {self.chunk_size} and {self.limit}")

    def settings(self) -> dict:
        """What decides the mined words (the resume guard compares these)."""
        from dataclasses import replace

        from scdpo.models.sampler_config import with_sampling_dtype, without_fp32
        from scdpo.utils.config import flat_asdict

        # "auto" resolved for ``device``; a folder mined before --dtype existed sampled in fp32 and still resumes
        flat = flat_asdict(replace(self, sampler=with_sampling_dtype(self.sampler, self.model, self.device)))
        return without_fp32({k: v for k, v in flat.items() if k not in ("out", "device", "batch_size")})
