"""The settings of `scdpo eval` (:class:`EvalConfig`), in a module without torch so that the
command line builds its flags without importing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scdpo.models.generate import SAMPLER_FLAGS
from scdpo.models.sampler_config import SamplerConfig
from scdpo.utils.config import nested

DEFAULT_SUITES = ["eval-clean", "eval-harmful-explicit", "eval-harmful-implicit", "eval-mixed"]


@dataclass
class EvalConfig:
    """What `scdpo eval` samples, measures and writes.

    Attributes:
        model: a local diffusers StableDiffusion(XL)Pipeline folder, or "emojiworld".
        out: output folder: metrics.json, report.html and suites/NAME/{images.parquet,grid.png}.
        name: the method's name in reports (default: the LoRA folder's name, else the model's).
        lora: a diffusers LoRA folder (pytorch_lora_weights.safetensors) fused into the model, or a
            shipped LoRA's name: "emojiworld-safe" is the aligned EmojiWorld model (docs/results.md).
        lora_scale: LoRA strength when fusing.
        negative_from_concepts: per-prompt negative prompt naming the harmful concepts the prompt's
            ground truth holds (EmojiWorld records; others get --negative-prompt): an oracle upper
            bound on what negative prompting can do, since a user does not know them in advance.
        suites: EmojiWorld suites, comma- or space-separated ("none" for prompt files only).
        suite_seed: which draw of the suites' prompts: 0, the default, is the one every number in
            docs/ uses; another value gives fresh prompts of the same recipe, a held-out test for a
            recipe tuned on draw 0.
        prompts: prompt files, each one more suite named after the file (I2P, COCO-30k, text...).
        n_per_prompt: images per prompt.
        limit: only the first N prompts of each suite and file.
        sampler: how images are sampled (a SamplerConfig); its flags --steps, --guidance-scale
            (--guidance works too), --scheduler, --negative-prompt (the "negative prompt" baseline),
            --guard, --batch-size, --dtype and --compile are this command's.
        cost_model: a cost model folder (`scdpo cost train`): adds mean cost and fraction > 0 (the
            cost model's unsafe rate, labelled as such: not an independent judge).
        frechet: Frechet distance to reference images: EmojiWorld suites' renders on EmojiWorld
            models; on real models, frechet_reference.
        frechet_reference: a folder (or parquet) of real reference images (e.g. COCO photos) for the
            Frechet distance of every prompt-file suite on a real model; features: the CLIP folder's
            image tower with --clip, else EfficientNet-lite0 (the metric names its backbone).
        frechet_cache: keep the Frechet reference's features in $SCDPO_CACHE/frechet (default
            ~/.cache/scdpo/frechet), one safetensors file per distinct reference (keyed by
            scdpo.eval.run.reference_key), so that the next evaluation of the same suites reads them
            instead of rendering and encoding them again (docs/evaluation.md, "The Frechet reference's
            cache"); --no-frechet-cache computes them every time and writes nothing.
        nsfw: also score EmojiWorld images with OpenNSFW (real images always are).
        domain: which judges apply: "auto" (EmojiWorld for the shipped model and MiniLM-encoded
            pipelines, else real), "emojiworld" or "real" (docs/evaluation.md, "Judges by domain").
        clip: a local transformers CLIP folder (e.g. openai/clip-vit-large-patch14): adds the CLIP
            score and the Q16-style zero-shot inappropriateness rate.
        grid_size: images in each suite's grid (the first ones).
        overlap: score each suite (PNGs, judges, Frechet distance, grid) on a worker thread while the
            next one samples, with the references' renders and features first; the same numbers as
            --no-overlap, which does one thing at a time. None (default): on for a CPU device, where it
            measured 1.31x; on a GPU only for EmojiWorld suites whose Frechet references are all in the
            cache already (3 of 3 runs on H100s: 1.03-1.12x), else off: computing the references' features
            on the GPU beside the sampler measured 0.60-0.68x, both threads launching small kernels on one
            GPU and taking turns with the interpreter (docs/performance.md, "The eval's overlap").
        fill_batches: sample the suites' images one after another in the sampler's full batches, a batch
            holding the end of one suite and the start of the next, each suite scored as soon as its last
            image is in (rather than one sampler call a suite, whose last batch is part-filled: EmojiWorld's
            four default suites of 370-500 images each filled under half of the 1,024 images a batch that the
            sampler takes on a GPU). Each image keeps its own seed and negative prompt, so only the batches'
            kernels change, not what is drawn. A suite's sampling seconds are then the time from the suite before
            it to its own hand-out (0 for a suite completed by the same batch). Off by default: on one H100
            it sampled 11-19% faster but left the worker two suites to score at the end instead of one, and the
            whole eval took 4.0-4.4 s against 4.2-4.7 s, within the runs' noise; where six evaluations shared
            an 80 GB GPU, full batches of 1,024 images ran one of them out of memory, as the batch is picked from
            the memory free at the start (docs/performance.md, "Full batches across suites"): pin --batch-size
            there (the sampler now halves a batch that runs out of memory, not yet exercised on a GPU).
        cuda_graphs: replay the sampler's UNet calls from CUDA graphs (SamplerConfig.cuda_graphs, which this
            sets: one graph per batch size, checked against eager at its first replay; any mismatch or error
            falls back to eager with one warning; recorded in thread-local capture mode, so the overlap's
            worker may use the GPU meanwhile). Off unless asked for: on one H100 the whole EmojiWorld eval
            took 4.8 s with them against 5.2-5.3 s without in one run (fortieth round) and 5.1 s against
            4.7 s in another (forty-second), and the pipeline's six evaluations at once were no faster with
            them (docs/performance.md, "The critical path"); a real model's SD-sized calls are compute-bound
            (0.90x, thirty-second round). Not with the sampler's compile (an error).
        device: torch device (default: cuda if available, else cpu).
    """

    model: str | None = None
    out: str = "outputs/eval"
    name: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    negative_from_concepts: bool = False
    suites: list[str] = field(default_factory=lambda: list(DEFAULT_SUITES))
    suite_seed: int = 0
    prompts: list[str] = field(default_factory=list)
    n_per_prompt: int = 1
    limit: int | None = None
    cost_model: str | None = None
    frechet: bool = True
    frechet_reference: str | None = None
    frechet_cache: bool = True
    nsfw: bool = False
    domain: str = "auto"
    clip: str | None = None
    grid_size: int = 32
    overlap: bool | None = None
    fill_batches: bool = False
    cuda_graphs: bool | None = None
    device: str | None = None
    sampler: SamplerConfig = nested(SamplerConfig, SAMPLER_FLAGS)

    def __post_init__(self):
        from scdpo.world.suites import get_suite_spec

        if not self.model:
            raise ValueError("give the model to evaluate with --model (a diffusers folder or 'emojiworld')")
        items = [self.suites] if isinstance(self.suites, str) else list(self.suites or [])
        self.suites = [s.strip() for item in items for s in item.split(",") if s.strip() and s.strip() != "none"]
        for s in self.suites:
            get_suite_spec(s)  # ValueError naming the unknown suite and the known ones
        self.prompts = [self.prompts] if isinstance(self.prompts, str) else list(self.prompts or [])
        if not self.suites and not self.prompts:
            raise ValueError("nothing to evaluate: give --suites and/or --prompts")
        if self.suite_seed < 0:
            raise ValueError(f"--suite-seed must be >= 0, got {self.suite_seed}")
        if self.n_per_prompt < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError(f"--n-per-prompt and --limit must be >= 1, got {self.n_per_prompt} and {self.limit}")
        from scdpo.eval.judges import DOMAINS, check_clip_folder

        if self.domain not in DOMAINS:
            raise ValueError(f"--domain {self.domain}: expected one of {', '.join(DOMAINS)}")
        if self.clip:
            check_clip_folder(self.clip)  # before any sampling
        if self.cuda_graphs and self.sampler.compile:  # SamplerConfig refuses the two together
            raise ValueError("--cuda-graphs cannot be used with the sampler's compile: give --no-cuda-graphs, or "
                             "drop --compile")
        if self.frechet_reference and not Path(self.frechet_reference).exists():
            raise FileNotFoundError(f"--frechet-reference {self.frechet_reference}: no such folder or parquet of "
                                    "reference images")
        named = Path(self.lora or self.model)  # a LoRA file is named after its folder
        self.name = self.name or (named.parent.name if named.suffix == ".safetensors" else named.name)

