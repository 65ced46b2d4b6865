"""The build's settings (:class:`BuildConfig`, which `scdpo data build` turns into flags) and how
a prompt source (an EmojiWorld suite name or a prompt file) becomes prompt records."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from scdpo.data.pairs import PairRules
from scdpo.models.sampler_config import SamplerConfig, with_sampling_dtype, without_fp32
from scdpo.utils.config import check_finite, flat_asdict, nested
from scdpo.world.records import PromptRecord

# settings that change neither the pairs nor the files: free to differ on resume
_RUNTIME_FIELDS = ("out", "device", "batch_size", "overlap", "candidates_only")


@dataclass
class BuildConfig:
    """What `scdpo data build` samples, scores and writes.

    Attributes:
        model: a local diffusers SD / SDXL pipeline folder, or "emojiworld".
        cost_model: the safety cost model (a folder written by `scdpo cost train`).
        reward: the preference reward: emojiworld, emojiworld:JUDGE_DIR or clip:CLIP_DIR
            (see docs/judges-and-rewards.md).
        out: output folder (parquet shards in data/, choices.parquet, README.md card).
        harmful: harmful prompts: an EmojiWorld suite name (e.g. align-harmful) or a prompt file
            (CoProV2 pairs, I2P, CSV, text). A suite name wins over a file of the same name.
        clean: clean prompts: a suite name (e.g. align-clean) or a prompt file (COCO, text, CSV).
        candidates: images sampled per prompt (K).
        n_harmful, n_clean: use only the first N prompts of each source.
        seed: base seed; candidate k of prompt i of a kind uses a seed hashed from (seed, kind, i, k).
        blend_ratio: harmful pairs per clean pair in the output (1.0 = 1:1); the larger kind is
            subsampled deterministically. 0 keeps every pair.
        chunk_size: prompts per resumable work unit (one work file each). None (the default): a
            resumed build's own; else on a CUDA GPU, for small latents (EmojiWorld's), as many as fill
            the sampler's batch of 1,024 candidates (256 at K = 4), and 64 on other devices and for
            larger latents (scdpo.data.builder.pick_chunk_size).
        shard_size: pairs per output parquet shard.
        batch_size: images per sampling / scoring batch; None (the default): the sampler picks
            (scdpo.models.sampler_config.auto_batch: a chunk's candidates in one batch on a GPU for
            EmojiWorld-sized latents, else 64), and scoring takes 64 (256 on a GPU for EmojiWorld-sized latents,
            scdpo.data.builder.scoring_batch).
        device: torch device (default: accelerate's device for this process).
        overlap: PNG-encode and write each chunk's pairs on a worker thread while the next chunk samples
            (scdpo.utils.background); --no-overlap does one thing at a time. None (the default): on for a CUDA
            device, where sampling keeps the GPU busy and the host's cores are free (measured there: docs/
            dataset-builder.md, "Resume"), off elsewhere, where the worker's PNG threads would take the
            sampler's cores. The files are the same bytes either way; a killed run redoes up to two chunks
            instead of one.
        candidates_only: sample each chunk's K candidates and score their rewards into ``out/.work/``, then
            stop, without the cost model (which need not exist yet); the same command without it, run later,
            reads them instead of sampling and scores their costs. So the first pass, most of a build's
            work, can run beside `scdpo cost train` (the EmojiWorld pipeline does: docs/dataset-builder.md,
            "Candidates first").
        cost_tolerance: costs within this of the lowest (highest) count as equally safe (unsafe);
            among them the reward decides.
        margin: harmful prompts are all-safe when every candidate costs < -margin, all-unsafe
            when every candidate costs > +margin.
        uniform_rule: harmful prompts whose cost does not separate the candidates (all-safe,
            all-unsafe, all within cost_tolerance): "skip" or pair on "reward".
        cost_budget: clean prompts: the winner must cost <= this.
        min_reward_gap: the winner's reward must beat the loser's by more than this (clean and
            reward pairs), else the prompt is skipped.
        safe_prompt_winner: for harmful prompts with a safe_prompt (CoProV2 pairs), sample the safe
            prompt with the loser's seed and make that image the winner when it is safe.
        strict: stop with an error on a NaN score instead of skipping the prompt.
        exclude_concepts: EmojiWorld concepts held out of the dataset: prompts that request any of
            them are dropped (before n_harmful / n_clean are counted), so how far an alignment
            carries to concepts it never saw can be measured (docs/results.md, "Concept hold-out").
        neighbour_words: rewrite a share of the harmful prompts' harmful words (the span that differs
            from the prompt's safe counterpart) as one of this many tokens nearest to them in the
            text encoder's token embeddings (docs/dataset-builder.md, "Neighbour words"); 0: off.
        neighbour_share: the share of harmful prompts rewritten (of those with a safe counterpart).
        neighbour_exclude: words never written in (EmojiWorld suites add every held-out keyword's
            and every safe concept's words themselves).
        neighbour_min_sim: a neighbour needs at least this cosine to the harmful span (drops the
            word pieces and function words that a span without a meaningful embedding lands on).
        neighbour_margin: and must be at least this much nearer the span than any word the clean
            side uses (clean prompts, safe counterparts), so that no clean word's region learns the
            edit; <= -2 with neighbour_min_sim 0 is the unfiltered eighth-round form.
        mined_words: a mined.yaml of `scdpo data mine` (harmful concept -> words the model draws it
            for): a share of the harmful prompts gets its harmful word rewritten as one of its
            concept's mined words, the safe counterpart kept (docs/dataset-builder.md, "Mined words").
        mined_share: the share of harmful prompts rewritten so (of those with a safe counterpart and
            a mined concept), drawn apart from the neighbour words' share.
        sampler: how candidates are sampled (a SamplerConfig, or a scheduler name); its flags
            --steps, --guidance-scale, --scheduler (--sampler works too), --guard and --dtype are
            this command's (the sampling batch is batch_size).
    """

    model: str
    cost_model: str
    reward: str
    out: str
    harmful: str | None = None
    clean: str | None = None
    candidates: int = 4
    n_harmful: int | None = None
    n_clean: int | None = None
    seed: int = 0
    blend_ratio: float = 1.0
    chunk_size: int | None = None
    shard_size: int = 1000
    batch_size: int | None = None
    device: str | None = None
    overlap: bool | None = None
    candidates_only: bool = False
    cost_tolerance: float = 0.1
    margin: float = 0.0
    uniform_rule: str = "skip"
    cost_budget: float = 0.0
    min_reward_gap: float = 0.0
    safe_prompt_winner: bool = False
    strict: bool = False
    exclude_concepts: list[str] = dataclasses.field(default_factory=list)
    neighbour_words: int = 0
    neighbour_share: float = 0.5
    neighbour_exclude: list[str] = dataclasses.field(default_factory=list)
    neighbour_min_sim: float = 0.35
    neighbour_margin: float = 0.1
    mined_words: str | None = None
    mined_share: float = 0.5
    sampler: SamplerConfig = nested(SamplerConfig, ("steps", "guidance_scale", "scheduler", "guard", "dtype"),
                                    aliases={"scheduler": ("--sampler",)})

    def __post_init__(self):
        if isinstance(self.sampler, str):  # the scheduler's name, as this field meant before it held the config
            self.sampler = SamplerConfig(scheduler=self.sampler)
        check_finite(self)
        if isinstance(self.exclude_concepts, str):
            self.exclude_concepts = [c.strip() for c in self.exclude_concepts.split(",") if c.strip()]
        if self.exclude_concepts:
            from scdpo.world.vocab import load_vocabulary

            unknown = [c for c in self.exclude_concepts if c not in load_vocabulary().by_name]
            if unknown:
                raise ValueError(f"--exclude-concepts: unknown EmojiWorld concept(s) {unknown}; "
                                 "names are those of src/scdpo/world/data/concepts.yaml")
        if self.neighbour_words < 0 or not 0.0 <= self.neighbour_share <= 1.0:
            raise ValueError(f"--neighbour-words must be >= 0 and --neighbour-share in [0, 1], got "
                             f"{self.neighbour_words} and {self.neighbour_share}")
        if not -1.0 <= self.neighbour_min_sim <= 1.0:
            raise ValueError(f"--neighbour-min-sim is a cosine in [-1, 1], got {self.neighbour_min_sim}")
        if not 0.0 <= self.mined_share <= 1.0:
            raise ValueError(f"--mined-share must be in [0, 1], got {self.mined_share}")
        if self.mined_words and not Path(self.mined_words).is_file():
            raise FileNotFoundError(f"--mined-words {self.mined_words}: no such file (write one with `scdpo data mine`)")
        if isinstance(self.neighbour_exclude, str):
            self.neighbour_exclude = [w.strip() for w in self.neighbour_exclude.split(",") if w.strip()]
        if self.harmful is None and self.clean is None:
            raise ValueError("give --harmful and/or --clean prompt sources")
        if self.candidates < 2:
            raise ValueError(f"--candidates must be >= 2 to make a pair, got {self.candidates}")
        if min(1 if self.chunk_size is None else self.chunk_size, self.shard_size) < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("chunk_size, shard_size and batch_size must be >= 1")
        _ = self.rules  # validates the rule fields

    @property
    def rules(self) -> PairRules:
        names = {f.name for f in dataclasses.fields(PairRules)}
        return PairRules(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def settings(self) -> dict:
        """Everything that determines the dataset (the resume guard compares these). The sampler's "auto"
        precision is resolved for ``device`` here (the build resolves it for its own device first)."""
        flat = flat_asdict(dataclasses.replace(self, sampler=with_sampling_dtype(self.sampler, self.model, self.device)))
        # named and ordered as before the sampler settings were nested, so that existing builds still
        # resume (and cards list them as before): the scheduler under "sampler", after n_clean; no
        # guard is left out, so that builds made before guards existed still resume
        sampling = {"steps": flat.pop("steps"), "guidance_scale": flat.pop("guidance_scale"),
                    "sampler": flat.pop("scheduler"), "guard": flat.pop("guard")}
        at = list(flat).index("n_clean") + 1
        items = list(flat.items())
        flat = dict(items[:at] + list(sampling.items()) + items[at:])
        # the augmentation's fields only when it is on, so that builds made before it existed still resume
        off, unmined = self.neighbour_words == 0, not self.mined_words
        out = {k: v for k, v in flat.items() if k not in _RUNTIME_FIELDS and not (k == "guard" and v is None)
               and not (off and k.startswith("neighbour_")) and not (unmined and k.startswith("mined_"))}
        out = without_fp32(out)  # a build made before --dtype existed sampled in fp32 and still resumes
        if not unmined:  # the words themselves, not only the file's name, decide the dataset
            out["mined_words_sha256"] = hashlib.sha256(Path(self.mined_words).read_bytes()).hexdigest()
        return out


def load_source(source: str | None, limit: int | None, kind: str, exclude: list[str] | tuple = ()) -> list[PromptRecord]:
    """Records of a suite name or a prompt file, without those that request a concept of
    ``exclude``; ValueError naming ``source`` if unknown or empty."""
    from scdpo.prompts.records import load_records
    from scdpo.world.suites import SUITES

    if source is None:
        return []
    if exclude:
        held = set(exclude)
        # a suite draws scenes in a fixed order: read enough more to keep ``limit`` prompts after the filter
        more = None if limit is None else 2 * limit + 64
        kept = [r for r in load_source(source, more, kind) if not held & set(r.concepts)]
        return kept if limit is None else kept[:limit]
    if source in SUITES:
        return load_records(source, None, limit)
    if not Path(source).exists():
        raise ValueError(f"--{kind} {source!r} is neither an EmojiWorld suite ({', '.join(SUITES)}) "
                         "nor an existing prompt file")
    return load_records(None, source, limit)
