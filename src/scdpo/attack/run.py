"""`scdpo attack NAME`: run one attack on every target against the model under test, resumably.

After each target the results so far are written atomically: ``state.json`` (the configuration
that determines the search, and one entry per finished target) and ``prompts.csv`` (the
adversarial prompts, a prompt file `scdpo eval --prompts` reads, with each target's concept and
categories). A rerun with the same flags skips the finished targets; each target's generator is
seeded from (seed, target index) alone, so a resumed run writes exactly what an uninterrupted one
does (with an iteration budget; a time budget depends on the machine's speed).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zlib
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import torch

from scdpo.attack.config import NOT_SEARCHED, AttackConfig

#: iterations per target when --budget-iters is not given: the papers' settings
DEFAULT_ITERS = {"ring-a-bell": 3000, "unlearndiff": 2000, "p4d": 3000, "paraphrase": 20}
# `check_seed`, not `seed`: eval would use a `seed` column for its first image, the very seed the
# search's checks selected the prompt on; ASR is measured on seeds the search never saw
CSV_COLUMNS = ["prompt", "categories", "concept", "check_seed", "attack", "source_prompt", "token_ids", "loss",
               "iterations", "success", "seconds"]


def target_seed(seed: int, index: int) -> int:
    """The seed of target ``index``'s generator: depends on nothing else, so resuming is exact."""
    return zlib.crc32(f"{seed}\0{index}".encode())


def sampler_for(cfg) -> object:
    """The sampler of the model under test; ``guard`` goes to the sampler's field of that name."""
    from scdpo.models.sampling import SamplerConfig

    return SamplerConfig(steps=cfg.steps, guidance_scale=cfg.guidance_scale, scheduler=cfg.scheduler,
                         negative_prompt=cfg.negative_prompt, progress=False, guard=cfg.guard)


def harm_judge(name: str, device):
    """``images -> bool tensor`` (harmful or not) for a judge name, or None for ``none``. The
    EmojiWorld judge flags an image when any harmful concept is present, as `scdpo eval` does."""
    if name == "none":
        return None
    from scdpo.judges.nsfw import load_judge

    scorer = load_judge(name, device)
    return lambda images: scorer(images) >= scorer.threshold


def load_victim(cfg):
    from scdpo.models.t2i import T2IModel

    model = T2IModel.from_pretrained(cfg.model, device=cfg.device)
    if cfg.lora:
        model.load_lora(cfg.lora, cfg.lora_scale)
    model.unet.requires_grad_(False)  # attacks optimise prompts only
    return model


def write_prompts(path: Path, results: list[dict]) -> None:
    from scdpo.utils.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({**{k: r.get(k) for k in CSV_COLUMNS}, "categories": ",".join(r["categories"]),
                         "token_ids": " ".join(map(str, r["token_ids"] or []))})
    atomic_write_text(path, buf.getvalue())


def with_defaults(config: dict) -> dict:
    """A stored search config with every field added since it was written at its default (e.g.
    --start, --suite-seed), so that old runs resume and merge with new ones."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(AttackConfig)
                if f.name not in NOT_SEARCHED and (f.default is not MISSING or f.default_factory is not MISSING)}
    return {**json.loads(json.dumps(defaults)), **config}


def load_state(out: Path, key: dict) -> dict:
    file = out / "state.json"
    if not file.is_file():
        return {"config": key, "results": []}
    try:
        state = json.loads(file.read_text())
        state["results"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file} is not an `scdpo attack` state file ({e}); use another --out") from None
    key = json.loads(json.dumps(key))
    stored = with_defaults(state.get("config", {}))
    stored = {k: stored.get(k) for k in key}
    if stored != key:
        changed = sorted(k for k in key if stored[k] != key[k])
        raise ValueError(f"{out} holds an attack run with other settings ({', '.join(changed)}); "
                         "rerun with the same flags to resume, or use another --out")
    state["config"] = key
    return state


def merge(out: Path, shards: list[Path]) -> Path:
    """Join finished shards of one attack (runs that differ only in --start/--limit and together
    cover every target once) into ``out``: the state and prompt file of the unsharded run, which
    `scdpo attack score` reads and whose command resumes there with nothing left to do. Exact,
    because each shard seeded every target from its index in the whole list."""
    from scdpo.attack.targets import build_targets
    from scdpo.utils.io import atomic_write_text

    states = []
    for shard in shards:
        file = Path(shard) / "state.json"
        if not file.is_file():
            raise FileNotFoundError(f"{shard} is not an `scdpo attack` output folder (no state.json)")
        states.append(json.loads(file.read_text()))
    whole = [{**with_defaults(s["config"]), "start": 0, "limit": None} for s in states]
    if any(w != whole[0] for w in whole):
        raise ValueError("the shards differ in more than --start and --limit; merge shards of one attack command")
    results = []
    for start, s in sorted(((s["config"].get("start", 0), s) for s in states), key=lambda p: p[0]):
        if start < len(results):
            raise ValueError(f"two shards hold target {start}; merge each slice once")
        if start > len(results):
            raise ValueError(f"targets {len(results)} to {start - 1} are in no shard (or not finished); "
                             "run or finish that shard, then merge again")
        results += s["results"]
    cfg = whole[0]
    total = len(build_targets(cfg["concepts"], cfg["prompts"], cfg["per_concept"], cfg["suite_seed"]))
    if len(results) != total:
        raise ValueError(f"the shards hold {len(results)} of {total} targets; run or finish the rest, then merge again")
    out.mkdir(parents=True, exist_ok=True)
    write_prompts(out / "prompts.csv", results)
    atomic_write_text(out / "state.json", json.dumps({"config": cfg, "results": results}, indent=1))
    print(f"merged {len(shards)} shards: {total} adversarial prompts in {out / 'prompts.csv'}")
    return out


def run(cfg: AttackConfig, attack_fn=None) -> Path:
    """Attack every target; returns the output folder. ``attack_fn`` replaces the registered
    attack (tests)."""
    from tqdm.auto import tqdm

    from scdpo.attack.base import AttackContext, Budget, get_attack
    from scdpo.attack.targets import build_targets
    from scdpo.utils.io import atomic_write_text

    out = Path(cfg.out)
    key = cfg.search_key()
    targets = build_targets(cfg.concepts, cfg.prompts, cfg.per_concept, cfg.suite_seed)
    if cfg.start >= len(targets):
        raise ValueError(f"--start {cfg.start} skips all {len(targets)} targets; give a smaller --start")
    targets = targets[cfg.start:][:cfg.limit]
    state = load_state(out, key)
    fn = attack_fn or get_attack(cfg.attack)
    todo = len(targets) - len(state["results"])
    if todo > 0:
        model = load_victim(cfg)
        ctx = AttackContext(cfg, model, sampler_for(cfg), harm_judge(cfg.judge, model.device))
        bar = tqdm(total=len(targets), initial=len(state["results"]), desc=f"attack {cfg.attack}", unit="prompt")
        for i, target in enumerate(targets):
            if i < len(state["results"]):
                continue
            # the index in the unsliced list: a shard (--start) searches each target as a whole run does
            g = torch.Generator().manual_seed(target_seed(cfg.seed, cfg.start + i))
            iters = cfg.budget_iters or DEFAULT_ITERS[cfg.attack]
            inner = tqdm(total=iters, desc=f"target {i + 1}", unit="it", leave=False)
            ctx.budget = Budget(iters, cfg.budget_seconds, bar=inner)
            t0 = time.monotonic()
            res = fn(ctx, target, g)
            inner.close()
            state["results"].append({**asdict(res), "attack": cfg.attack, "concept": target.concept,
                                     "categories": list(target.categories), "check_seed": target.seed,
                                     "source_prompt": target.prompt,
                                     "seconds": round(time.monotonic() - t0, 3),
                                     "loss": None if res.loss is None else round(res.loss, 6)})
            out.mkdir(parents=True, exist_ok=True)
            write_prompts(out / "prompts.csv", state["results"])
            atomic_write_text(out / "state.json", json.dumps(state, indent=1))
            bar.update(1)
            bar.set_postfix(success=sum(bool(r["success"]) for r in state["results"]))
        bar.close()
    elif not (out / "prompts.csv").is_file():
        write_prompts(out / "prompts.csv", state["results"])
    print(f"{len(state['results'])} adversarial prompts in {out / 'prompts.csv'}")
    if cfg.evaluate:
        from scdpo.attack.score import ScoreConfig, score

        score(ScoreConfig(run=str(out), seeds=cfg.score_seeds, device=cfg.device))
    return out
