#!/usr/bin/env python3
"""Issue 8, benchmark 1: the SC-DPO training step against a plain diffusers-script-style
Diffusion-DPO step, in one process on one GPU (docs/performance.md says what each lever is).

UNets are randomly initialised from the SD 1.5 config (64x64x4 latents, 77 tokens of 768-d
random text states) and the SDXL config (128x128x4, 2048-d context, pooled text embeds and time
ids), in full and LoRA (rank 8 on to_q/to_k/to_v/to_out.0) modes:

* ``plain``: fp32 weights (LoRA: the frozen base in bf16, as diffusers' train_diffusion_dpo.py)
  under ``torch.autocast(bfloat16)``, a separate deep-copied reference UNet under ``no_grad``
  (LoRA: the same UNet with adapters disabled), AdamW with torch's default (foreach) kernels.
* ``scdpo``: the toolkit's own code path (``scdpo.train.step.pair_errors``, ``Reference``,
  ``MasterWeights``, ``scdpo.train.losses``) with the levers named in the row.

Every variant starts from the same initialisation and sees the same pairs, noise and timesteps;
its first 20 losses are compared with the plain step's (``loss_dev``).  pairs/s counts every pass
(the reference too); TFLOP/s uses FLOPs counted once per shape and mode with
``torch.utils.flop_counter.FlopCounterMode`` on one plain step (eager), so every row of a shape is
divided by the same useful work.  Rows are written as JSON lines to ``--out`` as they finish; a
markdown table is printed last, also when the ``--budget-s`` wall-time budget runs out.

    python benchmarks/gpu_train_step.py --out $OUT/train.jsonl --budget-s 300     # one H200
    python benchmarks/gpu_train_step.py --tiny                                    # CPU, seconds
"""

from __future__ import annotations

import copy
import gc
import json
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gpu_common import SD15_UNET, OutOfBudget, base_parser, cancel_stop, exit_now, hard_stop, sync  # noqa: E402 (benchmarks/ is on sys.path)
import torch.nn.functional as F

SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
TINY = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(16, 32), cross_attention_dim=32, attention_head_dim=4)
TINY_XL = dict(TINY, cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=6 * 8 + 24)


@dataclass
class Shape:
    name: str
    unet: dict
    latent: int  # latent side
    tokens: int
    pooled: int | None  # SDXL pooled text embedding width
    base_pairs: int  # pairs per step of the first rows (and the loss check)
    search: tuple[int, ...]  # larger micro-batches tried for the best variants

    @property
    def xl(self) -> bool:
        return self.pooled is not None


SHAPES = {
    "sd15": Shape("sd15", SD15_UNET, 64, 77, None, 8, (16, 32, 48, 64)),
    "sdxl": Shape("sdxl", SDXL, 128, 77, 1280, 2, (4, 8, 16)),
    "tiny": Shape("tiny", TINY, 8, 8, None, 2, (4,)),
    "tiny-xl": Shape("tiny-xl", TINY_XL, 8, 8, 24, 2, (4,)),
}
BETA = 5000.0
LORA_RANK = 8
POOL = 128  # distinct random pairs (latents + captions) the steps cycle through
MAX_GRAD_NORM = 1.0
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Variant:
    """One row's implementation: ``impl`` plain or scdpo, and scdpo's levers."""

    name: str
    impl: str  # "plain" | "scdpo"
    mode: str  # "full" | "lora"
    fused_adamw: bool = False
    attention: str = "auto"
    compile: bool = False
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- harness
class Bench:
    """Shared state of one shape: the T2IModel wrapper (tiny VAE/text encoder, never used: latents
    and text states come from caches), the random pair pool, and the device."""

    def __init__(self, shape: Shape, device: torch.device, tmp: Path, lr_full: float, lr_lora: float,
                 dtype: torch.dtype = torch.bfloat16):
        from scdpo.models import testing
        from scdpo.models.t2i import T2IModel

        self.shape, self.device, self.dtype = shape, device, dtype
        self.lr = {"full": lr_full, "lora": lr_lora}
        folder = testing.tiny_sdxl_pipeline(tmp / "xl") if shape.xl else testing.tiny_sd_pipeline(tmp / "sd")
        self.model = T2IModel.from_pretrained(folder, device=device, dtype=torch.float32)
        self.model.resolution = shape.latent * 8  # SDXL's size ids
        g = torch.Generator().manual_seed(1234)
        c = shape.unet["cross_attention_dim"]
        self.latents = torch.randn(POOL, 2, 4, shape.latent, shape.latent, generator=g).to(device)
        self.context = torch.randn(POOL, shape.tokens, c, generator=g).to(device)
        self.pooled = torch.randn(POOL, shape.pooled, generator=g).to(device) if shape.xl else None
        self.flops: dict[tuple, float] = {}

    def new_unet(self) -> torch.nn.Module:
        """The shape's UNet, fp32, the same random initialisation every call (built on the device)."""
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        with torch.device(self.device):
            return UNet2DConditionModel(**self.shape.unet)

    def batch(self, step: int, pairs: int) -> dict:
        index = [(step * pairs + i) % POOL for i in range(pairs)]
        return {"index": index, "caption": [f"prompt {i}" for i in index]}

    def prime_prompts(self, dtype: torch.dtype) -> None:
        """Fill the model's prompt cache with the random text states (what encode_prompts returns)."""
        m = self.model
        m.dtype = dtype
        m._prompt_cache.clear()
        for i in range(POOL):
            pooled = None if self.pooled is None else self.pooled[i].to(dtype)
            m._prompt_cache[f"prompt {i}"] = (self.context[i].to(dtype), pooled)


def step_generator(step: int) -> torch.Generator:
    from scdpo.train.step import step_generator as gen

    return gen(0, step, 0)


# ------------------------------------------------------------------------------------ plain step
def build_plain(bench: Bench, v: Variant) -> dict:
    """diffusers' train_diffusion_dpo.py, as a user would write it for full fine-tuning too."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from scdpo.train.config import LORA_TARGETS

    unet = bench.new_unet()
    ref = None
    if v.mode == "full":
        ref = copy.deepcopy(unet).requires_grad_(False).eval()
    else:
        unet.requires_grad_(False)
        unet.to(bench.dtype if v.impl == "plain" else torch.float32)  # the script's weight_dtype
        torch.manual_seed(1)
        unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                    target_modules=list(LORA_TARGETS)))
        cast_training_params(unet, dtype=torch.float32)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=bench.lr[v.mode], weight_decay=1e-2)
    return dict(unet=unet, ref=ref, opt=opt, params=params, autocast=v.impl == "plain" and bench.dtype != torch.float32)


def plain_step(bench: Bench, s: dict, batch: dict, gen: torch.Generator) -> torch.Tensor:
    m, dev = bench.model, bench.device
    idx = torch.as_tensor(batch["index"], device=dev)
    both = bench.latents[idx]
    lat_w, lat_l = both[:, 0], both[:, 1]
    b = len(idx)
    noise = torch.randn(lat_w.shape, generator=gen).to(dev)  # the same draws as pair_errors
    t = torch.randint(0, m.noise_scheduler.config.num_train_timesteps, (b,), generator=gen).to(dev)
    latents, noise, t = torch.cat([lat_w, lat_l]), torch.cat([noise, noise]), torch.cat([t, t])
    ctx = bench.context[idx].repeat(2, 1, 1)
    added = None
    if bench.pooled is not None:
        side = bench.shape.latent * 8
        ids = torch.tensor([side, side, 0, 0, side, side], dtype=torch.float32, device=dev).repeat(2 * b, 1)
        added = {"text_embeds": bench.pooled[idx].repeat(2, 1), "time_ids": ids}
    unet = s["unet"]
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s["autocast"]):
        noisy = m.noise_scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, ctx, added_cond_kwargs=added).sample
        with torch.no_grad():
            if s["ref"] is None:
                unet.disable_adapters()
                ref_pred = unet(noisy, t, ctx, added_cond_kwargs=added).sample
                unet.enable_adapters()
            else:
                ref_pred = s["ref"](noisy, t, ctx, added_cond_kwargs=added).sample
        model_losses = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
        ref_losses = F.mse_loss(ref_pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
        w, l_ = model_losses.chunk(2)
        rw, rl = ref_losses.chunk(2)
        inside = -0.5 * BETA * ((w - l_) - (rw - rl))
        loss = -F.logsigmoid(inside).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s["params"], MAX_GRAD_NORM)
    s["opt"].step()
    s["opt"].zero_grad(set_to_none=True)
    return loss.detach()


# ------------------------------------------------------------------------------------ scdpo step
def build_scdpo(bench: Bench, v: Variant) -> dict:
    """What scdpo.train.trainer._build does with bf16 mixed precision (autocast=False, the default)."""
    from scdpo.train import model as tm
    from scdpo.train.config import LORA_TARGETS

    unet = bench.new_unet()
    full = v.mode == "full"
    master = tm.MasterWeights(unet.named_parameters()) if full else None  # from the fp32 weights
    unet.to(bench.dtype)
    if not full:
        torch.manual_seed(1)
        tm.add_lora(unet, LORA_RANK, float(LORA_RANK), list(LORA_TARGETS))
    reference = tm.Reference(unet, full, bench.dtype)
    if v.compile:
        tm.compile_policy_and_reference(unet, reference)
    unet.train()
    trainable = master.master if master else [p for p in unet.parameters() if p.requires_grad]
    fused = v.fused_adamw and bench.device.type == "cuda"
    opt = torch.optim.AdamW(trainable, lr=bench.lr[v.mode], weight_decay=1e-2, fused=fused)
    bench.prime_prompts(bench.dtype)
    return dict(unet=unet, ref=reference, opt=opt, params=trainable, master=master)


def scdpo_step(bench: Bench, s: dict, batch: dict, gen: torch.Generator, attention: str) -> torch.Tensor:
    """One micro-batch of scdpo.train.trainer (_accumulate + the optimizer step), Diffusion-DPO loss."""
    from scdpo.models.speed import attention_backend
    from scdpo.train.losses import LossState, PairBatchInfo, get_loss
    from scdpo.train.step import pair_errors

    with attention_backend(attention, bench.device):
        errors = pair_errors(bench.model, s["unet"], s["ref"], batch, gen, cache=bench.latents).errors
        loss_vec, _ = get_loss("dpo")(*errors, PairBatchInfo(), types.SimpleNamespace(beta=BETA), LossState())
        loss = loss_vec.mean()
    loss.backward()
    if s["master"] is not None:
        s["master"].grads_to_master()
    torch.nn.utils.clip_grad_norm_(s["params"], MAX_GRAD_NORM)
    s["opt"].step()
    if s["master"] is not None:
        s["master"].master_to_model()
    s["opt"].zero_grad(set_to_none=True)
    return loss.detach()


# ------------------------------------------------------------------------------------- measuring
def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_variant(bench: Bench, v: Variant, pairs: int, warmup: int, timed: int) -> dict:
    """Build, warm up, time; returns the row (losses of every step included)."""
    dev = bench.device
    row = {"shape": bench.shape.name, "variant": v.name, "impl": v.impl, "mode": v.mode, "pairs": pairs}
    t_build = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    s = build_scdpo(bench, v) if v.impl == "scdpo" else build_plain(bench, v)
    if v.impl != "scdpo":
        def step(i):
            return plain_step(bench, s, bench.batch(i, pairs), step_generator(i))
    else:
        def step(i):
            return scdpo_step(bench, s, bench.batch(i, pairs), step_generator(i), v.attention)
    losses = []
    t0 = time.perf_counter()
    for i in range(warmup):
        losses.append(step(i).item())
    sync(dev)
    row["build_s"] = round(t0 - t_build, 2)
    row["warmup_s"], row["warmup_steps"] = round(time.perf_counter() - t0, 2), warmup
    t0 = time.perf_counter()
    for i in range(warmup, warmup + timed):
        losses.append(step(i).item())  # .item(): the trainer syncs once a step too (its statistics)
    sync(dev)
    dt = (time.perf_counter() - t0) / timed
    row.update(s_per_step=round(dt, 4), pairs_per_s=round(pairs / dt, 2), losses=[round(x, 6) for x in losses])
    if dev.type == "cuda":
        row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    key = (bench.shape.name, v.mode)
    if v.impl == "plain" and key not in bench.flops and not v.compile:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step(warmup + timed)
        bench.flops[key] = counter.get_total_flops() / pairs
    if key in bench.flops:
        row["tflop_per_pair"] = round(bench.flops[key] / 1e12, 4)
        row["tflops"] = round(bench.flops[key] * pairs / dt / 1e12, 1)
    del s
    return row


# ---------------------------------------------------------------------------------------- driver
class Runner:
    def __init__(self, args):
        self.args, self.rows = args, []
        self.start = time.perf_counter()
        self.out = open(args.out, "a") if args.out else None

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def emit(self, row: dict) -> dict:
        self.rows.append(row)
        line = json.dumps(row)
        print(line if len(line) < 400 else line[:400] + " ...", flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()
        return row

    def row(self, bench: Bench, v: Variant, pairs: int, *, check: bool, need_s: float,
            steps: tuple[int, int] | None = None) -> dict:
        """One measured row, or a skipped / OOM / failed one (the run goes on)."""
        if self.left() < need_s:
            return self.emit({"shape": bench.shape.name, "variant": v.name, "mode": v.mode, "pairs": pairs,
                              "status": f"skipped: {self.left():.0f} s of budget left, ~{need_s:.0f} s needed"})
        warmup, timed = steps or ((self.args.warmup, self.args.steps) if check else (2, max(3, self.args.steps // 4)))
        error = None
        try:
            row = run_variant(bench, v, pairs, warmup, timed)
            row["status"] = "ok"
        except OutOfBudget:
            raise
        except torch.OutOfMemoryError:
            error = "OOM"
        except Exception as exc:  # a lever that fails on this stack is a result, not the end of the run
            error = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if error:
            row = {"shape": bench.shape.name, "variant": v.name, "mode": v.mode, "pairs": pairs, "status": error}
        free(bench.device)
        if row.get("status") == "ok" and check:
            self.check_losses(row)
        return self.emit(row)

    def check_losses(self, row: dict) -> None:
        """``loss_dev``: max |loss - plain loss| over the steps.  With bf16, both deviate from exact
        arithmetic (beta = 5000 amplifies rounding of the per-sample errors), so the yardstick is an
        fp32 run of the plain step (``fp32 ref``): ``loss_ok`` when this row is no further from it
        than ``--loss-tol`` plus twice the plain bf16 step's own distance (the bf16 tolerance)."""
        def same(r, impl):
            return (r.get("status") == "ok" and r.get("impl") == impl and r["shape"] == row["shape"]
                    and r["mode"] == row["mode"] and r["pairs"] == row["pairs"] and "losses" in r)

        def dev(a, b):
            return max(abs(x - y) for x, y in zip(a["losses"], b["losses"]))
        plain = next((r for r in self.rows if same(r, "plain")), None)
        ref = next((r for r in self.rows if same(r, "fp32ref")), None)
        if row["impl"] == "scdpo" and plain is not None:
            row["loss_dev"] = round(dev(row, plain), 6)
            row["loss_ok"] = row["loss_dev"] <= self.args.loss_tol
        if row["impl"] != "fp32ref" and ref is not None:
            row["loss_dev_fp32"] = round(dev(row, ref), 6)
            if row["impl"] == "scdpo" and plain is not None and "loss_dev_fp32" in plain:
                row["loss_ok"] = row["loss_dev_fp32"] <= self.args.loss_tol + 2 * plain["loss_dev_fp32"]

    def speedup(self, row: dict, same_pairs: bool) -> float | None:
        """pairs/s over the plain step's (at the same micro-batch, or its best at any)."""
        base = [r["pairs_per_s"] for r in self.rows if r.get("status") == "ok" and r.get("impl") == "plain"
                and r["shape"] == row["shape"] and r["mode"] == row["mode"]
                and (not same_pairs or r["pairs"] == row["pairs"])]
        return row["pairs_per_s"] / max(base) if base and "pairs_per_s" in row else None


def ladder(mode: str, args) -> list[Variant]:
    """The plain step, then scdpo with levers added one at a time (each row keeps the previous ones)."""
    rows = [Variant(f"plain {mode}", "plain", mode)]
    if args.precision == "bf16":  # the yardstick of the loss check, measured first
        rows.insert(0, Variant(f"fp32 ref {mode} (plain, no autocast)", "fp32ref", mode))
    pure = f"scdpo {args.precision} weights, no autocast" + (", fp32 master" if mode == "full" else "")
    rows += [Variant(pure, "scdpo", mode), Variant("+ fused AdamW", "scdpo", mode, fused_adamw=True)]
    for backend in args.attention:
        rows.append(Variant(f"+ attention={backend}", "scdpo", mode, fused_adamw=True, attention=backend))
    return rows


def best_of(runner: Runner, shape: str, mode: str, candidates: list[Variant]) -> Variant:
    """The fastest scdpo variant at the base batch whose losses match the plain step's (if none
    does, the fastest: its row says NO and the later rows are still worth having)."""
    done = [r for r in runner.rows if r.get("status") == "ok" and r["shape"] == shape and r["mode"] == mode
            and r.get("impl") == "scdpo"]
    for rows in ([r for r in done if r.get("loss_ok", True)], done):
        by_name = {r["variant"]: r for r in rows}
        scored = [(by_name[v.name]["pairs_per_s"], i, v) for i, v in enumerate(candidates) if v.name in by_name]
        if scored:
            return max(scored)[2]
    return candidates[0]


def best_pairs(runner: Runner, shape: str, variant: str) -> int | None:
    """The micro-batch at which ``variant`` ran fastest (pairs/s), None when it has no measured row."""
    done = [r for r in runner.rows if r.get("status") == "ok" and r["shape"] == shape and r["variant"] == variant]
    return max(done, key=lambda r: r["pairs_per_s"])["pairs"] if done else None


def estimate_s(runner: Runner, shape: str, variant: str, pairs: int, steps: int) -> float:
    """Seconds a row will take, from the same variant's last measured row (else a guess)."""
    done = [r for r in runner.rows if r.get("status") == "ok" and r["shape"] == shape and r["variant"] == variant]
    if not done:
        return 15.0
    r = done[-1]
    return r["s_per_step"] * pairs / r["pairs"] * steps + r["build_s"] + 2


def run_phases(runner: Runner, device, tmp: Path, args, shapes: list[str]) -> None:
    """Phases in order of importance (the budget may end the run at any row):
    ladder (first shape: plain, then scdpo levers one by one, both modes), search (largest micro-batch
    of plain and of the best scdpo variant), xl (the other shapes: plain and the best variant),
    compile (regional torch.compile on the best variant, first shape)."""
    first = SHAPES[shapes[0]]
    bench = Bench(first, device, tmp, args.lr_full, args.lr_lora, DTYPES[args.precision])
    flops = bench.flops  # counted once on the plain step; the compile phase's rows use the same count
    ladders = {mode: ladder(mode, args) for mode in args.modes}
    best = {}

    def plain_of(mode):
        return next(v for v in ladders[mode] if v.impl == "plain")
    need = 6 if device.type == "cpu" else 12
    if "ladder" in args.phases:
        for mode in args.modes:
            for v in ladders[mode]:
                runner.row(bench, v, first.base_pairs, check=True, need_s=need)
    for mode in args.modes:
        best[mode] = best_of(runner, first.name, mode, [v for v in ladders[mode] if v.impl == "scdpo"])
    if "search" in args.phases:
        steps = 2 + max(3, args.steps // 4)
        for mode in args.modes:
            for v in (plain_of(mode), replace(best[mode], name=f"{best[mode].name} (best)")):
                for pairs in first.search:
                    est = estimate_s(runner, first.name, plain_of(mode).name if v.impl == "plain" else best[mode].name,
                                     pairs, steps)
                    r = runner.row(bench, v, pairs, check=False, need_s=min(est, 120))
                    if r.get("status") != "ok":
                        break
    del bench
    free(device)
    if "xl" in args.phases:
        for name in shapes[1:]:
            bench = Bench(SHAPES[name], device, tmp, args.lr_full, args.lr_lora, DTYPES[args.precision])
            for mode in args.modes:
                for v in [r for r in ladders[mode] if r.impl != "scdpo"] + [best[mode]]:
                    runner.row(bench, v, SHAPES[name].base_pairs, check=True, need_s=2.5 * need,
                               steps=(max(2, args.warmup - 1), max(4, args.steps * 5 // 8)))
            del bench
            free(device)
    if "compile" in args.phases:
        bench = Bench(first, device, tmp, args.lr_full, args.lr_lora, DTYPES[args.precision])
        bench.flops = flops
        for mode in args.modes:
            cv = replace(best[mode], name=best[mode].name + " + compile", compile=True)
            runner.row(bench, cv, first.base_pairs, check=True, need_s=8 * need)  # the loss check's row
            # issue 16's goal compares with the plain step's best micro-batch: so also the eager variant's
            # fastest one from the search (its losses checked at the base batch, the row above)
            pairs = best_pairs(runner, first.name, f"{best[mode].name} (best)")
            if pairs and pairs != first.base_pairs:
                runner.row(bench, replace(cv, name=cv.name + " (best pairs)"), pairs, check=False, need_s=8 * need,
                           steps=(args.warmup, max(4, args.steps // 2)))
        del bench
        free(device)


def amortised(runner: Runner, row: dict, steps: int) -> str | None:
    """A compiled row over a run of ``steps`` optimizer steps at its micro-batch (its measured warm-up,
    compilation included, then its warm pace) against the plain step's best micro-batch at its warm
    pace for the same pairs, and the run length where the two break even. Computed from the rows."""
    ok = [r for r in runner.rows if r.get("status") == "ok" and r["shape"] == row["shape"] and r["mode"] == row["mode"]]
    plain = [r["pairs_per_s"] for r in ok if r.get("impl") == "plain"]
    if not plain or row.get("status") != "ok" or "warmup_s" not in row:
        return None
    w, s, pairs = row.get("warmup_steps", 4), row["s_per_step"], row["pairs"]
    ours = row["warmup_s"] + (steps - w) * s

    def against(other_s: float, what: str) -> str:  # other_s: the other step's warm seconds for these pairs
        even = (row["warmup_s"] - w * s) / (other_s - s) if other_s > s else float("inf")
        return f"{steps * other_s / ours:.2f}x {what} ({steps * other_s:.0f} s; break-even at {even:.0f} steps)"
    parts = [against(pairs / max(plain), "the plain step's best")]
    # the same variant eager at the same pairs: what turning compile on changes for a given run
    eager = row["variant"].replace(" + compile (best pairs)", " (best)").replace(" + compile", "")
    same = [r for r in ok if r["variant"] == eager and r["pairs"] == pairs]
    if same:
        parts.append(against(same[0]["s_per_step"], "the eager step at these pairs"))
    return f"{row['shape']} {row['mode']} {row['variant']}, {pairs} pairs: {steps} steps in {ours:.0f} s, " + "; ".join(parts)


def table(runner: Runner) -> str:
    head = ("| shape | mode | variant | pairs | pairs/s | x plain same pairs | x plain best | TFLOP/s | peak GB | "
            "warm-up s | loss dev vs plain | vs fp32 | ok | status |")
    lines = [head, "|" + "---|" * 14]

    def fmt(x):
        return "" if x is None else f"{x:.2f}"
    for r in runner.rows:
        sp = fmt(runner.speedup(r, True)) + " | " + fmt(runner.speedup(r, False)) if r.get("impl") == "scdpo" else " | "
        dev = f"{r['loss_dev']:.2g}" if "loss_dev" in r else ""
        dev += f" | {r['loss_dev_fp32']:.2g}" if "loss_dev_fp32" in r else " | "
        dev += f" | {'yes' if r['loss_ok'] else 'NO'}" if "loss_ok" in r else " | "
        lines.append(f"| {r['shape']} | {r['mode']} | {r['variant']} | {r['pairs']} | {r.get('pairs_per_s', '')} | "
                     f"{sp} | {r.get('tflops', '')} | {r.get('peak_gb', '')} | {r.get('warmup_s', '')} | {dev} | "
                     f"{r.get('status', '')} |")
    return "\n".join(lines)


def print_results(runner: Runner, run_steps: int) -> None:
    """The table, then each compiled row amortised over ``run_steps`` steps."""
    print(table(runner), flush=True)
    lines = [a for r in runner.rows if "compile" in r.get("variant", "") for a in [amortised(runner, r, run_steps)] if a]
    if lines:
        print(f"\nCompiled, over a run of {run_steps} steps (warm-up included):\n" + "\n".join(f"- {a}" for a in lines),
              flush=True)


def main(argv=None) -> int:
    p = base_parser(__doc__, "tiny UNets on the CPU: test the code path in seconds (fp32, where plain and scdpo "
                    "must agree exactly)", 450.0)
    p.add_argument("--shapes", default=None, help="comma list of sd15, sdxl (default both; --tiny: tiny, tiny-xl)")
    p.add_argument("--modes", default="full,lora")
    p.add_argument("--phases", default="ladder,search,xl,compile",
                   help="comma list, run in this order: ladder, search, xl, compile (see run_phases)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=16, help="timed steps of the base-batch rows (warmup + steps "
                   "losses are compared with the plain step's)")
    p.add_argument("--run-steps", type=int, default=1000,
                   help="run length over which the compiled rows' warm-up is amortised (printed after the table)")
    p.add_argument("--lr-full", type=float, default=1e-5)
    p.add_argument("--lr-lora", type=float, default=1e-4)
    p.add_argument("--loss-tol", type=float, default=0.02,
                   help="max |loss - plain loss| over the steps (bf16: plus twice plain's distance from fp32)")
    p.add_argument("--from-jsonl", metavar="FILE", help="print the table and the compiled rows' amortisation from "
                   "the rows a run wrote (its --out), measuring nothing")
    args = p.parse_args(argv)
    if args.from_jsonl:
        runner = Runner(types.SimpleNamespace(out=None, budget_s=0))
        runner.rows = [json.loads(line) for line in Path(args.from_jsonl).read_text().splitlines() if line.strip()]
        print_results(runner, args.run_steps)
        return 0
    args.modes = [m for m in args.modes.split(",") if m]
    args.attention = [a for a in args.attention.split(",") if a]
    args.phases = [a for a in args.phases.split(",") if a]
    args.precision = args.precision or ("fp32" if args.tiny else "bf16")
    shapes = (args.shapes or ("tiny,tiny-xl" if args.tiny else "sd15,sdxl")).split(",")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the probe (fp32 parts of plain)
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    runner = Runner(args)

    hard_stop(args.budget_s + 20)  # a little after the budget: the table is still printed
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "budget_s": args.budget_s}
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()

        info["diffusers"] = diffusers.__version__
        print(json.dumps(info), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            run_phases(runner, device, Path(tmp), args, shapes)
    except OutOfBudget:
        runner.emit({"shape": "-", "variant": "-", "mode": "-", "pairs": 0, "status": "stopped: budget exhausted"})
    except Exception as exc:  # still print what finished
        import traceback

        traceback.print_exc()
        runner.emit({"shape": "-", "variant": "-", "mode": "-", "pairs": 0,
                     "status": f"crashed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"})
    finally:
        cancel_stop()
    print(f"\n## Training step, {info['device']}, torch {info['torch']}, {time.perf_counter() - runner.start:.0f} s\n")
    print_results(runner, args.run_steps)
    return 0


if __name__ == "__main__":
    exit_now(main())
