"""The configuration of `scdpo attack NAME` (one dataclass for every attack; fields an attack does
not use are ignored by it) and of `scdpo attack score`; torch-free, so that the command line
builds their flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field


#: AttackConfig's fields that do not change the prompts found: left out of a run's stored settings
NOT_SEARCHED = frozenset({"out", "budget_seconds", "evaluate", "score_seeds", "device"})


@dataclass
class AttackConfig:
    """What `scdpo attack` attacks, with which budget, and where it writes.

    Attributes:
        attack: the attack: ring-a-bell, unlearndiff, p4d or paraphrase.
        model: the model under test: a local diffusers StableDiffusion(XL)Pipeline folder, or "emojiworld".
        out: output folder: prompts.csv (the adversarial prompts, for `scdpo eval --prompts`),
            state.json (resume state) and, once scored, metrics.json.
        lora: a diffusers LoRA (folder or .safetensors) fused into the model under test.
        lora_scale: LoRA strength when fusing.
        guard: a sampling-time guard of the model under test: sld:weak|medium|strong|max or safree
            (docs/baselines.md), applied to its checks and scoring images.
        negative_prompt: negative prompt of the model under test's guidance (the negative-prompt
            baseline; like --guard it acts in sampling: checks and scoring, not the gradient losses).
        concepts: EmojiWorld harmful concepts to attack ("all" for every one); each gets
            --per-concept prompts of the eval-harmful-explicit suite that ask for it.
        prompts: a prompt file to attack instead (any format `scdpo eval --prompts` reads); each
            harmful prompt is one target.
        per_concept: target prompts per concept (with --concepts).
        suite_seed: with --concepts, the draw of the eval-harmful-explicit suite the targets come
            from (as `scdpo eval --suite-seed`). 0 is the draw every round of docs/attacks.md
            attacked; another draw gives targets that no setting was chosen on.
        start: skip the first N targets; with --limit, one slice of an attack (a shard). Each
            target keeps its index in the whole list, so its generator and result are the ones an
            unsharded run gives it, and `scdpo attack merge` joins the shards into that run.
        limit: attack only the first N targets (after --start).
        budget_iters: iterations per target, in the attack's own unit (ring-a-bell: generations,
            unlearndiff and p4d: optimisation steps, paraphrase: candidate rewrites); default: the
            paper's (3000, 2000, 3000, 20).
        budget_seconds: wall-clock seconds per target (stops the search early; results then depend
            on the machine's speed, unlike an iteration budget).
        seed: seed of the search (each target's generator is seeded from it and the target's index).
        tokens: adversarial tokens K (default: ring-a-bell 16, unlearndiff 5, p4d 16).
        eta: ring-a-bell's concept strength: target embedding = E(prompt) + eta * concept vector.
        population: ring-a-bell's population size.
        mutation_rate: ring-a-bell's per-individual mutation probability.
        crossover_rate: ring-a-bell's per-parent crossover probability.
        concept_pairs: ring-a-bell's prompt pairs (with and without the concept) per concept vector.
        pairs: ring-a-bell: a prompt file of pairs for the concept vector (CoProV2 pairs, a CSV with
            a safe_prompt column, or Ring-A-Bell's own prompt/prompt1 files); default: EmojiWorld's
            align-harmful pairs of the concept, else the target's own pair.
        lr: learning rate of the gradient attacks (default: unlearndiff 0.01, p4d 0.1).
        weight_decay: weight decay of the gradient attacks' optimiser.
        check_every: steps between the gradient attacks' checks of the current prompt (default:
            unlearndiff 40, one timestep's block; p4d 50).
        check_seeds: images of each check (seeds seed, seed + 1, ...): a prompt counts as found only
            when the victim draws something harmful on every one of them. 1 (default) is the papers'
            one fixed seed; more keeps searching until the prompt holds beyond one lucky seed, which
            is what `scdpo attack score` measures on fresh seeds (docs/attacks.md, "Thirteenth round").
        insert_every: p4d: 0 for P4D-N (--tokens free tokens); k > 0 for P4D-K (the prompt kept, a
            free token before every k of its tokens; the authors use 3).
        neighbours: paraphrase: nearest-neighbour tokens tried per harmful word.
        hand_list: paraphrase: a YAML/JSON file mapping a word to its replacements (tried first);
            EmojiWorld concepts always add their own keywords and held-out synonyms.
        token_pool: restrict the token searches to the tokens of these words.
        judge: the harm judge for success checks and ASR: emojiworld, opennsfw, nudenet or none.
        steps: sampler steps (target images, checks and scoring).
        guidance_scale: classifier-free guidance weight.
        scheduler: dpmsolver++, ddim or euler.
        evaluate: score the attack success rate when the attack is done (as `scdpo attack score`).
        score_seeds: images per adversarial prompt when scoring.
        device: torch device (default: cuda if available, else cpu).
    """

    attack: str
    model: str | None = None
    out: str = "outputs/attack"
    lora: str | None = None
    lora_scale: float = 1.0
    guard: str | None = None
    negative_prompt: str | None = None
    concepts: list[str] = field(default_factory=list)
    prompts: str | None = None
    per_concept: int = 1
    suite_seed: int = 0
    start: int = 0
    limit: int | None = None
    budget_iters: int | None = None
    budget_seconds: float | None = None
    seed: int = 0
    tokens: int | None = None
    eta: float = 3.0
    population: int = 200
    mutation_rate: float = 0.25
    crossover_rate: float = 0.5
    concept_pairs: int = 30
    pairs: str | None = None
    lr: float | None = None
    weight_decay: float = 0.1
    check_every: int | None = None
    check_seeds: int = 1
    insert_every: int = 0
    neighbours: int = 20
    hand_list: str | None = None
    token_pool: list[str] = field(default_factory=list)
    judge: str = "emojiworld"
    steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str = "dpmsolver++"
    evaluate: bool = False
    score_seeds: int = 4
    device: str | None = None

    def __post_init__(self):
        from scdpo.attack import NAMES

        if self.attack not in NAMES:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {', '.join(NAMES)}")
        if not self.model:
            raise ValueError("give the model to attack with --model (a diffusers folder or 'emojiworld')")
        self.concepts = [c.strip() for item in ([self.concepts] if isinstance(self.concepts, str) else self.concepts)
                         for c in item.split(",") if c.strip()]
        if bool(self.concepts) == bool(self.prompts):
            raise ValueError("give exactly one of --concepts and --prompts")
        for name in ("per_concept", "population", "concept_pairs", "score_seeds", "steps", "check_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("limit", "budget_iters", "tokens", "check_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.suite_seed < 0:
            raise ValueError(f"--suite-seed must be >= 0, got {self.suite_seed}")
        if self.suite_seed and self.prompts:
            raise ValueError("--suite-seed picks the draw of --concepts targets; a --prompts file has no draws "
                             "(drop --suite-seed)")
        if self.start < 0:
            raise ValueError(f"--start must be >= 0, got {self.start}")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ValueError(f"--budget-seconds must be > 0, got {self.budget_seconds}")
        if not (0 <= self.mutation_rate <= 1 and 0 <= self.crossover_rate <= 1):
            raise ValueError("--mutation-rate and --crossover-rate must be in [0, 1]")
        if self.insert_every < 0:
            raise ValueError(f"--insert-every must be >= 0, got {self.insert_every}")
        if self.neighbours < 0:
            raise ValueError(f"--neighbours must be >= 0, got {self.neighbours}")
        from scdpo.models.guards import get_guard

        get_guard(self.guard)  # fail fast on an unknown guard, before any model loads

    def search_key(self) -> dict:
        """The fields that determine the prompts found (resume refuses to mix runs that differ);
        the time budget and the scoring fields are left out."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in NOT_SEARCHED}


@dataclass
class ScoreConfig:
    """What `scdpo attack score` scores.

    Attributes:
        run: an `scdpo attack` output folder (state.json, prompts.csv).
        seeds: images per adversarial prompt.
        name: the model's name in reports (default: the LoRA folder's name, else the model's).
        judge: the harm judge (default: the attack run's; emojiworld, opennsfw or nudenet).
        into: a folder whose metrics.json (an `scdpo eval` run, or a new file) gets this attack's
            attack_success_rate merged in.
        model, lora, guard, negative_prompt: score another model under test than the one the
            attack ran against (a transfer; default: the run's own). ``--lora none`` drops the
            run's LoRA. A search that never queried its victim (ring-a-bell, or any attack with
            ``--judge none`` whose loss ignores the UNet) serves every victim with the same text
            encoder this way. Needs --out.
        out: where a transfer score writes its metrics.json and images (the run folder is left as
            it is); default: the run folder, when the victim is the run's own.
        batch_size: images per sampling batch (None: the sampler picks, scdpo.models.sampler_config.auto_batch).
        device: torch device (default: cuda if available, else cpu).
    """

    run: str
    seeds: int = 4
    name: str | None = None
    judge: str | None = None
    into: str | None = None
    batch_size: int | None = None
    device: str | None = None
    model: str | None = None
    lora: str | None = None
    guard: str | None = None
    negative_prompt: str | None = None
    out: str | None = None

    def __post_init__(self):
        if self.seeds < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"--seeds and --batch-size must be >= 1, got {self.seeds} and {self.batch_size}")
        if self.victim() and not self.out:
            raise ValueError("scoring another model than the attack's victim needs --out DIR (the run's own "
                             "metrics.json stays the victim's)")
        if self.guard:
            from scdpo.models.guards import get_guard

            get_guard(self.guard)

    def victim(self) -> dict:
        """The model-under-test fields given here, to replace the attack run's."""
        return {k: getattr(self, k) for k in ("model", "lora", "guard", "negative_prompt") if getattr(self, k)}
