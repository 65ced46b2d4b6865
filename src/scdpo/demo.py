"""`scdpo demo`: the whole method end to end on EmojiWorld, from the shipped base model, on a CPU.

Five stages, each the toolkit's own command run with small settings, each resumable (a stage whose
output is complete is skipped when the demo is run again):

1. ``cost``  train the safety cost model on renders (``scdpo cost train``);
2. ``scp``   build a small SCP dataset from the base model (``scdpo data build``);
3. ``lora``  train an SC-DPO LoRA on it (``scdpo train``);
4. ``eval``  evaluate base and aligned on the same prompts and seeds (``scdpo eval``);
5. ``compare`` one table, plots and side-by-side grids (``scdpo eval compare``).

The defaults fit the README's promise (about 10 minutes on 2 CPU cores); BENCHMARKS.md has the
measured time. ``--lora emojiworld-safe`` skips stages 1-3: it compares the base model with the
aligned LoRA shipped in the package (trained on one H200, docs/results.md), nothing to train.
``--world-only`` keeps the old behaviour: suite grids and the taxonomy, in seconds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DemoConfig:
    """Settings of the end-to-end demo.

    Attributes:
        out: folder for every stage's output (cost/, scp/, lora/, eval-base/, eval-sc-dpo/, compare/).
        model: base model ("emojiworld" = the shipped one, or a local diffusers folder).
        cost_pool: EmojiWorld renders the cost model's adapter is trained on.
        cost_steps: adapter training steps.
        cost_heldout: held-out renders per suite for the cost model's metrics.
        harmful_prompts: align-harmful prompts the SCP dataset is built from ...
        clean_prompts: ... and align-clean prompts (blended 1:1).
        candidates: images sampled per prompt.
        sample_steps: DPM-Solver++ steps when building pairs and evaluating.
        train_steps: SC-DPO optimizer steps (LoRA rank 8, batch ``batch_size`` pairs).
        batch_size: pairs per SC-DPO step.
        lr: SC-DPO learning rate.
        cost_budget, uniform_rule: the SCP builder's rules (docs/dataset-builder.md).
        eval_prompts: prompts per evaluation suite (eval-harmful-explicit, eval-clean).
        seed: seeds every stage.
        lora: compare the base model with this LoRA instead of training one (stages 1-3 skipped): a
            LoRA folder or a shipped LoRA's name, "emojiworld-safe" (the GPU-trained aligned model).
        world_only: only render the suite grids and print the taxonomy (no models).
    """

    out: str = "outputs/demo"
    model: str = "emojiworld"
    cost_pool: int = 1500
    cost_steps: int = 800
    cost_heldout: int = 50
    harmful_prompts: int = 40
    clean_prompts: int = 40
    candidates: int = 2
    sample_steps: int = 15
    train_steps: int = 120
    batch_size: int = 8
    lr: float = 3e-4
    cost_budget: float = 0.0
    uniform_rule: str = "skip"
    eval_prompts: int = 48
    seed: int = 0
    lora: str | None = None
    world_only: bool = False
    suites: list[str] = field(default_factory=lambda: ["eval-harmful-explicit", "eval-clean"])


def _stage(name: str, done: Path, fn) -> None:
    if done.exists():
        print(f"[demo] {name}: done already ({done.parent}), skipped")
        return
    from scdpo.models.speed import tf32_restored

    t0 = time.time()
    print(f"[demo] {name} ...", flush=True)
    with tf32_restored():  # each stage in the precision it would have alone (a GPU build's "tf32" ends with it)
        fn()
    print(f"[demo] {name}: {time.time() - t0:.0f} s", flush=True)


def run(cfg: DemoConfig) -> dict | None:
    """Run the demo; returns the comparison summary (None with ``world_only``)."""
    if cfg.world_only:
        world(cfg.out)
        return None
    import torch

    from scdpo.eval.compare import compare
    from scdpo.eval.run import EvalConfig, run as run_eval
    from scdpo.models.sampler_config import SamplerConfig

    out = Path(cfg.out)
    start = time.time()
    print(f"[demo] {torch.get_num_threads()} CPU thread(s) (--threads; by default the cores left idle)", flush=True)
    if cfg.lora:  # an aligned LoRA given (the shipped one): nothing to train, no cost model to score with
        from scdpo.models.registry import resolve_lora_path

        methods, cost_model = (("base", None), (Path(cfg.lora).name, str(resolve_lora_path(cfg.lora)))), None
    else:
        _train_stages(cfg, out)
        methods, cost_model = (("base", None), ("sc-dpo", str(out / "lora"))), str(out / "cost")
    for name, lora in methods:
        _stage(f"evaluate {name}", out / f"eval-{name}" / "metrics.json", lambda name=name, lora=lora: run_eval(EvalConfig(
            model=cfg.model, lora=lora, name=name, out=str(out / f"eval-{name}"), suites=list(cfg.suites),
            limit=cfg.eval_prompts, sampler=SamplerConfig(steps=cfg.sample_steps), cost_model=cost_model)))
    summary = compare([str(out / f"eval-{name}") for name, _ in methods], out / "compare")
    print(f"\n[demo] finished in {time.time() - start:.0f} s; report: {out / 'compare' / 'report.html'}")
    return summary


def _train_stages(cfg: DemoConfig, out: Path) -> None:
    """Stages 1-3: the cost model, the SCP dataset and the SC-DPO LoRA, each skipped when done."""
    from scdpo.cost.train import CostTrainConfig, train as train_cost
    from scdpo.data.builder import build
    from scdpo.data.config import BuildConfig
    from scdpo.models.sampler_config import SamplerConfig
    from scdpo.train.config import TrainConfig
    from scdpo.train.trainer import train

    _stage("cost model", out / "cost" / "config.json", lambda: train_cost(CostTrainConfig(
        out=str(out / "cost"), pool=cfg.cost_pool, steps=cfg.cost_steps, eval_n=cfg.cost_heldout, seed=cfg.seed,
        vae="auto" if cfg.model == "emojiworld" else cfg.model)))  # the round trip through the generator's own VAE
    _stage("SCP dataset", out / "scp" / "README.md", lambda: build(BuildConfig(
        model=cfg.model, cost_model=str(out / "cost"), reward="emojiworld", out=str(out / "scp"),
        harmful="align-harmful", clean="align-clean", n_harmful=cfg.harmful_prompts, n_clean=cfg.clean_prompts,
        candidates=cfg.candidates, sampler=SamplerConfig(steps=cfg.sample_steps), safe_prompt_winner=True, seed=cfg.seed,
        cost_budget=cfg.cost_budget, uniform_rule=cfg.uniform_rule)))
    _stage("SC-DPO LoRA", out / "lora" / "pytorch_lora_weights.safetensors", lambda: train(TrainConfig(
        model=cfg.model, dataset=str(out / "scp"), out=str(out / "lora"), loss="sc-dpo", beta=312.5, winner_weight=1.0,
        lr=cfg.lr, warmup=10, batch_size=cfg.batch_size, max_steps=cfg.train_steps, seed=cfg.seed,
        checkpoint_every=max(cfg.train_steps // 2, 1), validate_every=0, log_every=10,
        # the VAE encodes the 62 pairs once, not 960 times over 120 steps: the stage 176 -> 118 s on one CPU
        # thread, the same table (BENCHMARKS.md, "The README demo with cached latents")
        cache_latents=True,
        resume=(out / "lora" / "checkpoints").is_dir())))  # a rerun of a killed demo continues its run


def world(out: str, n: int = 16, size: int = 64, seed: int = 0) -> list[Path]:
    """One labelled grid per EmojiWorld suite, and the harm taxonomy."""
    from scdpo.utils.grid import save_grid
    from scdpo.world.commands import print_taxonomy
    from scdpo.world.render import render_scenes
    from scdpo.world.suites import SUITES, suite_scenes

    paths = []
    for name in SUITES:
        scenes = suite_scenes(name, n, seed)
        path = save_grid(render_scenes(scenes, size), Path(out) / "world" / f"{name}.png", [s.caption for s in scenes])
        print(f"{name:24s} -> {path}")
        paths.append(path)
    print()
    print_taxonomy()
    return paths


def register(sub: argparse._SubParsersAction) -> None:
    from scdpo.utils.config import add_dataclass_args, dataclass_from_args

    p = sub.add_parser("demo", help="end to end on EmojiWorld: cost model, SCP pairs, SC-DPO LoRA, base vs aligned report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(p, DemoConfig, skip=("suites",))
    p.set_defaults(func=lambda a: run(dataclass_from_args(DemoConfig, a)))
