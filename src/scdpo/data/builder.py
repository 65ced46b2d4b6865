"""Build safety-constrained preference pairs (SC-DPO's training data) from any T2I model.

For each prompt: sample K candidates with per-image seeds, score them with the cost model and the
preference reward, choose a pair by the rules of :mod:`scdpo.data.pairs`, and write Pick-a-Pic
style parquet. Work is done in chunks of prompts; each finished chunk is one file under
``out/.work/`` (written under a temporary name and renamed), so a killed run restarted with the
same command redoes at most two chunks per process (with the overlap, the one being written and the one
sampling; without it, one). ``--candidates-only`` writes each chunk's first pass there too
(``candidates-XXXXX.safetensors``), which the build then reads instead of sampling. :func:`scdpo.data.card.finalize`
then blends
the kinds, writes ``out/data/train-*.parquet``, ``out/choices.parquet`` and the dataset card.

Where the run's wall time went (setup, sampling, scoring, png, write, ...) goes to ``out/seconds.json``
(:func:`write_seconds`), not into the summary: the summary is stored in the manifest and returned again by
a resumed or finished build, and compared across runs, while seconds belong to one run of one process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
from datetime import timedelta
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scdpo.data.card import MANIFEST, WORK, finalize
from scdpo.data.config import BuildConfig, load_source
from scdpo.data.pairs import choose_clean, choose_harmful, harmful_loser, stable_hash
from scdpo.models.sampler_config import (DEFAULT_BATCH, SMALL_LATENT, SMALL_LATENT_BATCH, dtype_hint,
                                         with_sampling_dtype)
from scdpo.utils.background import Background
from scdpo.utils.io import atomic_path, atomic_write_text
from scdpo.utils.phases import Phases
from scdpo.world.records import PromptRecord, Scorer

log = logging.getLogger(__name__)

#: prompts per chunk on the CPU and for latents larger than SMALL_LATENT (:func:`pick_chunk_size`)
CHUNK = 64
#: the build's wall seconds by phase, beside the card (:func:`write_seconds`)
SECONDS = "seconds.json"


def candidate_seed(seed: int, kind: str, index: int, k: int) -> int:
    """Seed of candidate ``k`` of prompt ``index`` of ``kind``: independent of chunking and processes."""
    return stable_hash(seed, kind, index, k) % 2**31


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to 8 bits, exactly as :func:`scdpo.world.dataset.png_bytes` stores them."""
    return (images.clamp(0, 1) * 255).round() / 255


def score_batched(fn: Scorer, images: torch.Tensor, records: list[PromptRecord], batch_size: int, name: str) -> list[float]:
    parts = []
    for i in range(0, len(records), batch_size):
        out = torch.as_tensor(fn(images[i:i + batch_size], records[i:i + batch_size])).float().cpu().reshape(-1)
        if out.numel() != len(records[i:i + batch_size]):
            raise ValueError(f"the {name} scorer returned {out.numel()} scores for {len(records[i:i + batch_size])} images")
        parts.append(out)
    return torch.cat(parts).tolist() if parts else []


def check_image_size(cost_fn: Scorer, resolution: int, cost_model: str) -> None:
    """A cost scorer that declares ``image_size`` (int or (H, W)) must match the model's images.
    Scorers that resize internally declare nothing."""
    size = getattr(cost_fn, "image_size", None)
    if size is None:
        return
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size != (resolution, resolution):
        raise ValueError(f"the model samples {resolution}x{resolution} images but cost model {cost_model!r} "
                         f"expects {size[0]}x{size[1]}")


def encode_pairs(pairs: dict) -> None:
    """The pairs' image columns, tensors from :func:`choose_chunk`, PNG-encoded in place."""
    from scdpo.world.dataset import png_bytes_many

    for col in ("jpg_0", "jpg_1"):
        pairs[col] = png_bytes_many(pairs[col])


def sample_candidates(items: list[tuple[str, int, PromptRecord]], model, reward_fn: Scorer, cfg: BuildConfig,
                      phases: Phases | None = None) -> tuple[torch.Tensor, list[float]]:
    """A chunk's first pass, which needs no cost model: K candidates a prompt, (N*K, 3, H, W) in [0, 1] quantized
    as stored, and their rewards. ``phases`` gets the seconds of "sampling" and "scoring"."""
    phases = phases or Phases()  # None: timed all the same, into one nobody reads
    K = cfg.candidates
    # the sampler's own bar (denoising steps) moves inside a chunk, which is minutes on a CPU
    sampler = replace(cfg.sampler, batch_size=cfg.batch_size, progress=False)
    seeds = [candidate_seed(cfg.seed, kind, i, k) for kind, i, _ in items for k in range(K)]
    records = [r for _, _, r in items for _ in range(K)]
    # scored as stored: 8-bit, as the PNGs will be, so the score columns describe the saved images; they
    # come back on the CPU, so "sampling" holds the device's work whole
    with phases("sampling"):
        images = quantize(model.sample([r.prompt for r in records], seeds, sampler))
    with phases("scoring"):
        rewards = score_batched(reward_fn, images, records, cfg.batch_size or scoring_batch(model), "reward")
    return images, rewards


def save_candidates(path: Path, images: torch.Tensor, rewards: list[float]) -> None:
    """A chunk's first pass (:func:`sample_candidates`) as safetensors: the images' 8-bit values, which
    :func:`load_candidates` turns back into the same float32 numbers, and the rewards."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"images": (images * 255).round().to(torch.uint8).contiguous(),
                   "rewards": torch.tensor(rewards, dtype=torch.float32)}, str(tmp))


def load_candidates(path: Path, count: int | None = None) -> tuple[torch.Tensor, list[float]]:
    """A chunk's first pass written by :func:`save_candidates`; ``count``: the candidates the chunk must have."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    n = len(t["images"])
    if n != len(t["rewards"]) or (count is not None and n != count):
        raise ValueError(f"{path} holds {n} images and {len(t['rewards'])} rewards, not the chunk's {count}: it is "
                         f"another build's; delete it and run again (the chunk is sampled anew)")
    return t["images"].float() / 255, t["rewards"].tolist()


def choose_chunk(items: list[tuple[str, int, PromptRecord]], model, cost_fn: Scorer, reward_fn: Scorer,
                 cfg: BuildConfig, phases: Phases | None = None,
                 first: tuple[torch.Tensor, list[float]] | None = None) -> tuple[dict, dict]:
    """Sample, score and choose for one chunk of ``(kind, index, record)``; returns (pairs, choices) columns, the
    pairs' image columns holding (3, H, W) tensors in [0, 1] (:func:`encode_pairs` makes them PNG bytes).
    ``phases``: a :class:`~scdpo.utils.phases.Phases` that gets the seconds of "sampling" and "scoring".
    ``first``: the chunk's first pass when sampled already (:func:`sample_candidates`, ``--candidates-only``)."""
    phases = phases or Phases()
    rules, K = cfg.rules, cfg.candidates
    sampler = replace(cfg.sampler, batch_size=cfg.batch_size, progress=False)
    score_batch = cfg.batch_size or scoring_batch(model)
    seeds = [[candidate_seed(cfg.seed, kind, i, k) for k in range(K)] for kind, i, _ in items]
    records = [r for _, _, r in items for _ in range(K)]
    images, rewards = first if first is not None else sample_candidates(items, model, reward_fn, cfg, phases)
    with phases("scoring"):
        costs = score_batched(cost_fn, images, records, score_batch, "cost")
    costs = [costs[j * K:(j + 1) * K] for j in range(len(items))]
    rewards = [rewards[j * K:(j + 1) * K] for j in range(len(items))]
    candidates = [list(images[j * K:(j + 1) * K]) for j in range(len(items))]
    seeds_used = [list(s) for s in seeds]
    safe_prompts = [None] * len(items)
    if rules.safe_prompt_winner:  # second pass: the safe prompt, with the seed of the would-be loser
        wanted = []
        for j, (kind, _, r) in enumerate(items):
            lose = harmful_loser(costs[j], rewards[j], rules) if kind == "harmful" and r.safe_prompt else None
            if lose is not None and costs[j][lose] > rules.margin:
                wanted.append((j, seeds[j][lose]))
        if wanted:
            with phases("sampling"):
                safe_images = quantize(model.sample([items[j][2].safe_prompt for j, _ in wanted],
                                                    [s for _, s in wanted], sampler))
            safe_records = [items[j][2] for j, _ in wanted]  # scored against the caption it is trained under
            with phases("scoring"):
                safe_costs = score_batched(cost_fn, safe_images, safe_records, score_batch, "cost")
                safe_rewards = score_batched(reward_fn, safe_images, safe_records, score_batch, "reward")
            for (j, s), img, c, rw in zip(wanted, safe_images, safe_costs, safe_rewards):
                safe_prompts[j] = items[j][2].safe_prompt
                candidates[j].append(img)
                costs[j].append(c)
                rewards[j].append(rw)
                seeds_used[j].append(s)
    pair_schema, choice_schema = schemas()
    pairs = {name: [] for name in pair_schema.names}
    choices = {name: [] for name in choice_schema.names}
    for j, (kind, i, r) in enumerate(items):
        pid, category = f"{kind}/{i:06d}", ",".join(r.categories) if kind == "harmful" else ""
        try:
            if kind == "harmful":
                has_safe = safe_prompts[j] is not None
                choice = choose_harmful(costs[j][:K], rewards[j][:K], rules,
                                        safe=(costs[j][K], rewards[j][K]) if has_safe else None)
            else:
                choice = choose_clean(costs[j], rewards[j], rules)
        except ValueError as err:
            raise ValueError(f"prompt {pid} {r.prompt[:60]!r}: {err}") from None
        side = stable_hash(cfg.seed, "side", kind, i) & 1  # which column the winner goes to
        for name, value in [("prompt_id", pid), ("kind", kind), ("index", i), ("prompt", r.prompt),
                            ("category", category), ("reason", choice.reason),
                            ("status", "pair" if choice.accepted else "skipped"),
                            ("winner", -1 if choice.winner is None else choice.winner),
                            ("loser", -1 if choice.loser is None else choice.loser),
                            ("winner_side", side if choice.accepted else -1), ("safe_prompt", safe_prompts[j]),
                            ("seeds", seeds_used[j]), ("costs", costs[j]), ("rewards", rewards[j])]:
            choices[name].append(value)
        if not choice.accepted:
            continue
        order = [choice.winner, choice.loser] if side == 0 else [choice.loser, choice.winner]
        for col, k in enumerate(order):
            # a copy: a view would keep the chunk's every candidate alive until the worker writes it
            pairs[f"jpg_{col}"].append(candidates[j][k].clone())  # encoded all at once (encode_pairs)
            pairs[f"cost_{col}"].append(costs[j][k])
            pairs[f"reward_{col}"].append(rewards[j][k])
            pairs[f"seed_{col}"].append(seeds_used[j][k])
        for name, value in [("caption", r.prompt), ("label_0", float(side == 0)), ("label_1", float(side == 1)),
                            ("kind", kind), ("category", category), ("prompt_id", pid),
                            ("safe_caption", r.safe_prompt if kind == "harmful" else None)]:
            pairs[name].append(value)
    return pairs, choices


def schemas():
    """Arrow schemas of the pairs (the output shards) and of the choices."""
    import pyarrow as pa

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    pairs = pa.schema([("caption", s), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()), ("label_0", f64),
                       ("label_1", f64), ("cost_0", f64), ("cost_1", f64), ("reward_0", f64), ("reward_1", f64),
                       ("kind", s), ("category", s), ("seed_0", i64), ("seed_1", i64), ("prompt_id", s),
                       ("safe_caption", s)])
    choices = pa.schema([("prompt_id", s), ("kind", s), ("index", i64), ("prompt", s), ("category", s),
                         ("reason", s), ("status", s), ("winner", i64), ("loser", i64), ("winner_side", i64),
                         ("safe_prompt", s), ("seeds", pa.list_(i64)), ("costs", pa.list_(f64)),
                         ("rewards", pa.list_(f64))])
    return pairs, choices


def _write(columns: dict, schema, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)


def write_seconds(out: Path, phases: Phases, worker: Phases | None = None, name: str = SECONDS) -> dict:
    """``out/NAME`` (``seconds.json``; ``--candidates-only`` writes ``seconds-candidates.json``): this run's wall
    seconds by phase (of the main process; other processes' are not gathered): "seconds_by_phase", the main
    thread's, and with the overlap "worker_seconds_by_phase", the worker's PNGs and writes, which ran beside the
    main thread's sampling (so the two do not add up). A resumed build's are its own run's only; a build found
    complete leaves the file as it was."""
    seconds = {"seconds_by_phase": phases.rounded()}
    if worker is not None:
        seconds["worker_seconds_by_phase"] = worker.rounded()
    atomic_write_text(out / name, json.dumps(seconds, indent=1))
    return seconds


def _guard(out: Path, settings: dict) -> dict | None:
    """Refuse to mix two builds in one folder; returns the manifest if there is one."""
    path = out / MANIFEST
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    if manifest["settings"] != settings:
        was = manifest["settings"]
        # both sides' keys: dtype is recorded only when it is not fp32, so it is missing on one side
        get = lambda d, k: d.get(k, "fp32" if k == "dtype" else None)  # noqa: E731
        diff = {k: (get(was, k), get(settings, k)) for k in {**was, **settings} if get(was, k) != get(settings, k)}
        raise ValueError(f"{out} holds a build made with other settings (was, now): {diff}; "
                         f"use another --out or the same settings{dtype_hint(was, settings)}")
    return manifest


def build(cfg: BuildConfig, model=None, cost_fn: Scorer | None = None, reward_fn: Scorer | None = None) -> dict:
    """Build (or resume) the dataset in ``cfg.out``; returns the summary also stored in the card (with
    ``cfg.candidates_only``, what the first pass wrote: :func:`_candidates_only`).

    ``model`` (anything with ``.sample(prompts, seeds, sampler_config)``, ``.resolution`` and ``.dtype_name``, the
    precision it samples in, which the settings record; without it, ``cfg.sampler.dtype`` resolved is recorded),
    ``cost_fn`` and ``reward_fn`` default to loading ``cfg.model``, ``cfg.cost_model``, ``cfg.reward``.
    Under ``accelerate launch`` / ``torchrun`` the chunks still to do are dealt round-robin to the
    processes; the main process writes the output and card and returns the summary, the others ``{}``.
    The run's seconds by phase go to ``out/seconds.json`` (:func:`write_seconds`), never into the summary.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from scdpo.utils.lock import folder_lock

    phases = Phases()  # out/seconds.json: where the wall time went
    # PartialState only forms a CPU process group when told to (Accelerator reads ACCELERATE_USE_CPU
    # itself); without it, CPU processes under torchrun would each think they are alone
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    # a long barrier timeout: the processes wait for the slowest one before the card is written
    state = PartialState(cpu=str(cfg.device).startswith("cpu") or parse_flag_from_env("ACCELERATE_USE_CPU")
                         or (launched and not torch.cuda.is_available()), timeout=timedelta(hours=6))
    out = Path(cfg.out)
    harmful = load_source(cfg.harmful, cfg.n_harmful, "harmful", cfg.exclude_concepts)
    clean = load_source(cfg.clean, cfg.n_clean, "clean", cfg.exclude_concepts)
    if cfg.neighbour_words and harmful:
        harmful, model = _neighbours(cfg, harmful, clean, model, state)
    if cfg.mined_words and harmful:
        from scdpo.data.mine import load_mined, mined_rewrites

        harmful, n = mined_rewrites(harmful, load_mined(cfg.mined_words), cfg.mined_share, cfg.seed)
        log.info("mined words: %d of %d harmful prompts rewritten", n, len(harmful))
        if n == 0:
            log.warning("--mined-words %s rewrote no prompt of %s: its prompts need a safe counterpart and a "
                        "concept the file mines words for", cfg.mined_words, cfg.harmful)
    items = [("harmful", i, r) for i, r in enumerate(harmful)]
    items += [("clean", i, r) for i, r in enumerate(clean)]
    if cfg.clean and any(r.harmful for kind, _, r in items if kind == "clean"):
        log.warning("clean source %s has prompts labelled harmful; they are treated as clean", cfg.clean)
    # the main process holds out's lock: a second build into the same folder is refused
    with folder_lock(out, "scdpo data build") if state.is_main_process else contextlib.nullcontext():
        return _build(cfg, state, out, items, model, cost_fn, reward_fn, phases)


def _neighbours(cfg: BuildConfig, harmful: list[PromptRecord], clean: list[PromptRecord], model, state):
    """The harmful prompts with the neighbour-word augmentation applied (scdpo.data.neighbours),
    its filter's clean words read from the clean prompts and the harmful prompts' safe
    counterparts; loads the model here when not given, since the rewrite needs its text encoder."""
    from scdpo.data.neighbours import clean_words, emojiworld_excluded_words, emojiworld_safe_words, neighbour_rewrites
    from scdpo.world.suites import SUITES

    if model is None:
        model = _load_model(cfg, state.device if state.num_processes > 1 else cfg.device or state.device)
    exclude = {w.lower() for w in cfg.neighbour_exclude}
    keep = clean_words([r.prompt for r in clean] + [r.safe_prompt for r in harmful if r.safe_prompt])
    if cfg.harmful in SUITES:
        exclude |= emojiworld_excluded_words()
        keep |= emojiworld_safe_words()
    harmful, n = neighbour_rewrites(harmful, model, cfg.neighbour_words, cfg.neighbour_share, cfg.seed, exclude,
                                    keep, cfg.neighbour_min_sim, cfg.neighbour_margin)
    log.info("neighbour words: %d of %d harmful prompts rewritten", n, len(harmful))
    if n == 0:
        log.warning("--neighbour-words %d rewrote no prompt of %s: its prompts need a safe counterpart "
                    "(CoProV2 pairs, EmojiWorld suites)", cfg.neighbour_words, cfg.harmful)
    return harmful, model


def pick_chunk_size(device_type: str, latent_hw: tuple[int, int], candidates: int, prompts: int,
                    processes: int = 1) -> int:
    """Prompts per chunk when ``--chunk-size`` is not given and no build is resumed.

    On a GPU, small latents (EmojiWorld's 16x16; the sampler's own test, SMALL_LATENT of
    :func:`scdpo.models.sampler_config.auto_batch`) are sampled a chunk's candidates in one batch of up to
    SMALL_LATENT_BATCH; 64 prompts x 4 candidates left it a quarter full. A chunk that fills it, 256 prompts
    at K = 4, took the whole EmojiWorld build from 2.34x to 3.56x today's images/s on an H100 (BENCHMARKS.md,
    "Twenty-seventh round"). Never so large that a process of ``processes`` gets no chunk of ``prompts``.
    Larger latents, and the CPU, keep 64: a chunk's images are held until it is written, and it is the
    unit of progress and resume."""
    if device_type == "cuda" and latent_hw[0] * latent_hw[1] <= SMALL_LATENT:
        share = -(-prompts // max(processes, 1))
        return max(CHUNK, min(SMALL_LATENT_BATCH // candidates, share))
    return CHUNK


#: images a scoring call on a GPU for small latents (:func:`scoring_batch`)
SMALL_LATENT_SCORE_BATCH = 256


def scoring_batch(model) -> int:
    """Images a cost or reward call when ``--batch-size`` is not given: 64, but SMALL_LATENT_SCORE_BATCH on a GPU
    for small latents (EmojiWorld's 64-px images). At 64 a call, each ending in a copy to the CPU that waits for
    the GPU, scoring took 7.5 s of the pipeline's build on an H100 (BENCHMARKS.md, "Thirty-eighth round"); 256
    makes it four calls a scorer for a chunk of 1,024 candidates (not 1,024 at once: the cost model's backbone
    works at 224 px, heavier an image than the sampler at 16x16 latents). Another batch rounds a GPU's scores
    otherwise in the last bits."""
    device = getattr(model, "device", None)
    factor = getattr(model, "vae_scale_factor", 8)
    side = getattr(model, "resolution", 0) // factor
    small = device is not None and torch.device(device).type == "cuda" and 0 < side * side <= SMALL_LATENT
    return SMALL_LATENT_SCORE_BATCH if small else DEFAULT_BATCH


def _load_model(cfg: BuildConfig, device):
    from scdpo.models.t2i import T2IModel

    return T2IModel.for_sampling(cfg.model, cfg.sampler, device=device)


def _with_chunk_size(cfg: BuildConfig, out: Path, model, device, prompts: int, processes: int):
    """(``cfg`` with its chunk size fixed, the model): a resumed build's own chunk size (chunks are
    numbered by it), else :func:`pick_chunk_size` for this device and model (loaded here, as the build
    would load it). Every process computes the same: the manifest is written after the first barrier."""
    if (out / MANIFEST).exists():
        return replace(cfg, chunk_size=json.loads((out / MANIFEST).read_text())["settings"].get("chunk_size", CHUNK)), model
    model = model if model is not None else _load_model(cfg, device)
    factor = getattr(model, "vae_scale_factor", 8)
    latent = ((cfg.sampler.height or model.resolution) // factor, (cfg.sampler.width or model.resolution) // factor)
    picked = pick_chunk_size(torch.device(device).type, latent, cfg.candidates, prompts, processes)
    return replace(cfg, chunk_size=picked), model


def candidates_path(work: Path, chunk: int) -> Path:
    """Where ``--candidates-only`` keeps chunk ``chunk``'s first pass (:func:`save_candidates`)."""
    return work / f"candidates-{chunk:05d}.safetensors"


def _candidates_only(cfg: BuildConfig, state, out: Path, items: list, todo: list[int], model, reward_fn,
                     phases: Phases) -> dict:
    """``--candidates-only``: each chunk's first pass into ``out/.work`` (resumable, a file a chunk), nothing
    else: the build run later with the same settings reads them instead of sampling, and needs the cost model
    only then. Its seconds go to ``out/seconds-candidates.json``; the main process returns what it wrote."""
    work = out / WORK
    bar = tqdm(total=sum(len(items[c * cfg.chunk_size:(c + 1) * cfg.chunk_size]) for c in todo),
               desc=f"candidates (process {state.process_index})", unit="prompt")
    for c in todo:
        chunk = items[c * cfg.chunk_size:(c + 1) * cfg.chunk_size]
        images, rewards = sample_candidates(chunk, model, reward_fn, cfg, phases)
        with phases("write"):
            save_candidates(candidates_path(work, c), images, rewards)
        bar.update(len(chunk))
    bar.close()
    state.wait_for_everyone()
    phases.mark("waiting")
    if not state.is_main_process:
        return {}
    write_seconds(out, phases, name="seconds-candidates.json")
    n_chunks = -(-len(items) // cfg.chunk_size)
    done = sum(candidates_path(work, c).exists() or (work / f"pairs-{c:05d}.parquet").exists() for c in range(n_chunks))
    return {"candidates_only": True, "chunks": n_chunks, "chunks_sampled": done, "candidates": cfg.candidates,
            "next": "run the same command without --candidates-only once the cost model exists"}


def _build(cfg: BuildConfig, state, out: Path, items: list, model, cost_fn, reward_fn, phases: Phases) -> dict:
    # several processes: each its own accelerator (a --device cpu made the state a CPU one)
    device = state.device if state.num_processes > 1 else cfg.device or state.device
    cfg = replace(cfg, sampler=with_sampling_dtype(cfg.sampler, cfg.model, device, model))
    if cfg.chunk_size is None:
        cfg, model = _with_chunk_size(cfg, out, model, device, len(items), state.num_processes)
    settings = cfg.settings()
    manifest = _guard(out, settings)
    if manifest and manifest.get("complete"):
        log.info("%s is already complete", out)
        if state.is_main_process:  # a run killed while it cleaned up
            shutil.rmtree(out / WORK, ignore_errors=True)
        return manifest["summary"]
    n_chunks = -(-len(items) // cfg.chunk_size)
    work = out / WORK
    # the chunks still to do are dealt round-robin, so a resumed run stays balanced across processes;
    # every process lists them before the barrier, i.e. before any process writes a chunk
    left = [c for c in range(n_chunks) if not (work / f"pairs-{c:05d}.parquet").exists()
            and not (cfg.candidates_only and candidates_path(work, c).exists())]
    todo = left[state.process_index::state.num_processes]
    state.wait_for_everyone()
    # the model, cost model and reward load (and are checked) before the first write: a refused
    # build leaves no manifest behind to block the corrected one
    if todo or (manifest is None and state.is_main_process):
        if model is None:
            model = _load_model(cfg, device)
        if cost_fn is None and not cfg.candidates_only:
            from scdpo.cost import load_cost_scorer

            cost_fn = load_cost_scorer(cfg.cost_model, device, batch_size=cfg.batch_size or scoring_batch(model))
        if reward_fn is None:
            from scdpo.eval.reward import load_reward

            reward_fn = load_reward(cfg.reward, device)
        if cost_fn is not None:
            check_image_size(cost_fn, model.resolution, cfg.cost_model)
    if state.is_main_process and manifest is None:
        with atomic_path(out / MANIFEST) as tmp:
            tmp.write_text(json.dumps({"settings": settings, "complete": False}, indent=1))
    phases.mark("setup")  # sources, neighbour words, the model, cost model and reward, the manifest
    if cfg.candidates_only:
        return _candidates_only(cfg, state, out, items, todo, model, reward_fn, phases)
    pair_schema, choice_schema = schemas()
    # counts prompts, not chunks: "0/2 chunks" sat still for 14 minutes on a CPU (issue 23)
    bar = tqdm(total=sum(len(items[c * cfg.chunk_size:(c + 1) * cfg.chunk_size]) for c in todo),
               desc=f"pairs (process {state.process_index})", unit="prompt")
    # with the overlap, a worker thread encodes and writes a chunk while the next one samples: ahead=0, so a chunk
    # is submitted once the one before it is written (at most two chunks in flight, one writing, one sampling);
    # without it, one thing at a time in this thread. Either way the files are the same bytes. The worker's
    # seconds are its own Phases: a Phases is one thread's
    overlap = cfg.overlap if cfg.overlap is not None else torch.device(device).type == "cuda"
    worker = Phases() if overlap else phases

    def finish(c: int, pairs: dict, choices: dict) -> None:
        with worker("png"):
            encode_pairs(pairs)
        # choices first: the pairs file is what marks a chunk done
        with worker("write"):
            _write(choices, choice_schema, work / f"choices-{c:05d}.parquet")
            _write(pairs, pair_schema, work / f"pairs-{c:05d}.parquet")

    with Background(overlap, ahead=0) as bg:
        written = []
        try:
            for c in todo:
                chunk = items[c * cfg.chunk_size:(c + 1) * cfg.chunk_size]
                ahead = candidates_path(work, c)  # sampled by an earlier --candidates-only run
                with phases("reading") if ahead.exists() else contextlib.nullcontext():
                    first = load_candidates(ahead, len(chunk) * cfg.candidates) if ahead.exists() else None
                pairs, choices = choose_chunk(chunk, model, cost_fn, reward_fn, cfg, phases, first)
                # with the overlap: waits for the chunk before, if still writing, and raises its error
                with phases("writing") if overlap else contextlib.nullcontext():
                    written.append(bg.submit(finish, c, pairs, choices))
                bar.update(len(chunk))
        except BaseException as err:
            # a chunk already sampled is still written when a later one fails: the run restarted redoes only
            # the failed one, as without the overlap; a write that failed too is logged, not lost
            concurrent.futures.wait(written)
            for future in written:
                if not future.cancelled() and future.exception() not in (None, err):
                    log.error("writing a chunk failed too: %s", future.exception())
            raise
        phases.mark("choosing")  # what the chunks' blocks left: the pair rules, the columns, the bar
        for future in written:
            future.result()  # the last chunk's error too: no card over a chunk that was never written
        phases.mark("writing")  # waiting for the worker's last chunk (without the overlap: ~0)
    bar.close()
    state.wait_for_everyone()
    phases.mark("waiting")  # for the other processes' chunks (alone: none)
    if not state.is_main_process:  # no barrier after the card: the others need not idle through it
        return {}
    with phases("finalize"):
        summary = finalize(out, cfg, n_chunks, pair_schema)
    log.info("seconds by phase: %s", write_seconds(out, phases, worker if worker is not phases else None))
    return summary
