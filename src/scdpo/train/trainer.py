"""The SC-DPO trainer: Diffusion-DPO, SafetyDPO and SC-DPO on Pick-a-Pic-format pairs.

accelerate gives devices, mixed precision, multi-GPU (``accelerate launch``) and checkpoints;
TensorBoard and tqdm show progress.  A checkpoint holds the trainable weights (the LoRA only, in
LoRA mode), the optimizer and ``trainer_state.json`` (step, data position, lambda, focusing mean,
non-finite counters); with all per-step randomness derived from (seed, data position), a resumed
run continues exactly as an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scdpo.models.graphs import GraphedPredict
from scdpo.models.graphs_train import GraphedTrainPredict
from scdpo.models.speed import attention_backend, to_device
from scdpo.train import model as tm
from scdpo.train.adversary import PromptBank, adversarial_anchor, with_bank
from scdpo.train.checkpoint import Progress, check_fresh, checkpoints, resume, save_checkpoint
from scdpo.train.config import COMPILE_PAYS_FROM, TrainConfig
from scdpo.train.data import PreferencePairs, StreamSampler
from scdpo.train.fingerprint import fingerprint, settings
from scdpo.train.losses import LossState, dpo_logit, dual_ascent, get_loss, update_state
from scdpo.train.anchor import anchor_inputs, anchor_terms, build_bank, clean_rows, hold_weights
from scdpo.train.step import batch_info, pair_errors, pair_latents, step_generator
from scdpo.utils.io import atomic_write_text

__all__ = ["TrainConfig", "TrainingDiverged", "train"]
log = logging.getLogger(__name__)
LORA_CKPT = "lora.safetensors"
MASTER_CKPT = "master_weights.safetensors"


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


def _accelerator(cfg: TrainConfig, out: Path):
    import os

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from scdpo.utils.checkpoints import reset_accelerate_state, resolve_mixed_precision

    mp = resolve_mixed_precision(cfg.mixed_precision)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # `accelerate launch` of N processes without CUDA: accelerate would make each its own one-process
    # run, all writing the same --out; on the CPU (gloo) they are one run
    kwargs = {"cpu": True} if cfg.device == "cpu" or (launched and not torch.cuda.is_available()) else {}
    reset_accelerate_state()  # another run in this process (tests, notebooks) may ask another precision
    acc = Accelerator(mixed_precision=mp, log_with="tensorboard", **kwargs,
                      project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    if launched and acc.num_processes == 1:
        raise ValueError(f"launched as {os.environ['WORLD_SIZE']} processes, but accelerate set up a one-process "
                         "run in each; check the `accelerate launch` config (or pass --device cpu)")
    return acc


def pure_bf16(cfg: TrainConfig, mixed_precision: str, fsdp: bool = False) -> bool:
    """Whether the UNet holds bf16 weights and computes without autocast (docs/performance.md):
    ``cfg.autocast`` when set, else what measured best on an H200 (full fine-tuning yes, with fp32
    master weights; LoRA no). Only with bf16 mixed precision, never under FSDP: an explicit
    ``autocast: false`` there is an error, not silently ignored."""
    if cfg.autocast is False and (mixed_precision == "fp16" or fsdp):
        raise ValueError(f"autocast: false needs bf16 mixed precision without FSDP (got {mixed_precision}"
                         f"{' under FSDP' if fsdp else ''}); drop it or set mixed_precision: bf16")
    autocast = (not cfg.full) if cfg.autocast is None else cfg.autocast
    return not autocast and mixed_precision == "bf16" and not fsdp


def check_timesteps(cfg: TrainConfig, model) -> None:
    """The training timestep bounds must lie within the model's training timesteps."""
    n_t = model.noise_scheduler.config.num_train_timesteps
    if max(cfg.min_timestep, cfg.clean_min_timestep or 0) >= n_t or (cfg.max_timestep or 0) > n_t:
        raise ValueError(f"min_timestep/clean_min_timestep/max_timestep ({cfg.min_timestep}, {cfg.clean_min_timestep}, "
                         f"{cfg.max_timestep}) must lie within "
                         f"the model's {n_t} training timesteps")


def _build(cfg: TrainConfig, acc):
    """Model with LoRA (or not), reference, optimizer; returns (model, wrapped policy, reference,
    opt, params to clip, master weights or None)."""
    from accelerate.utils import AutocastKwargs, DistributedType

    from scdpo.models.t2i import T2IModel

    fsdp = acc.distributed_type == DistributedType.FSDP
    if fsdp and not cfg.full:
        raise ValueError("FSDP is for full fine-tuning (--full); train LoRA with the DDP config")
    if fsdp and (cfg.anchor_adv_eps > 0 or cfg.anchor_p4d_every > 0):
        raise ValueError("anchor_adv_eps and anchor_p4d_every search with the unwrapped policy, which FSDP shards: "
                         "train them with the DDP config")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(acc.mixed_precision, torch.float32)
    pure = pure_bf16(cfg, acc.mixed_precision, fsdp)
    if pure:
        acc.autocast_handler = AutocastKwargs(enabled=False)  # read by prepare() and acc.autocast()
    # LoRA: the frozen base in half precision, adapters in fp32; full: fp32 weights (under autocast,
    # or the master copies of bf16 ones, taken before rounding)
    model = T2IModel.from_pretrained(cfg.model, device=acc.device, dtype=torch.float32 if cfg.full else half)
    check_timesteps(cfg, model)
    unet = model.unet
    master = None
    if pure and cfg.full:
        master = tm.MasterWeights(unet.named_parameters())
        model.to(dtype=half)
    if not cfg.full:
        tm.add_lora(unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    reference = tm.Reference(unet, cfg.full, half)
    if cfg.compiles(acc.device.type):
        if cfg.compile is None:
            log.info("compile: on (the default on CUDA for %d micro-batches; --no-compile turns it off)",
                     cfg.max_steps * cfg.grad_accum)
        tm.compile_policy_and_reference(unet, reference, cfg.compile_mode)
        model.pad_rows = True  # a handful of batch sizes, so the compiled blocks stop recompiling
    elif cfg.compile_mode or cfg.compile_cache:
        log.warning("compile is off for this run (unset: on only on CUDA, for a model other than EmojiWorld's and "
                    ">= %d micro-batches), so --compile-mode / --compile-cache do nothing; pass --compile",
                    COMPILE_PAYS_FROM)
    unet.train()
    trainable = master.master if master else [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=acc.device.type == "cuda")
    policy, opt = acc.prepare(unet, opt)
    params = master.master if master else [p for p in policy.parameters() if p.requires_grad]  # FSDP replaces them
    if master is not None:  # checkpoints hold the fp32 master weights (safetensors, no pickle) instead of
        # the bf16 UNet, which is their rounding: loading them restores both
        def save_master(models, weights, output_dir):
            if acc.is_main_process:
                from safetensors.torch import save_file

                state = {k: v.contiguous() for k, v in master.state_dict().items()}
                save_file(state, str(Path(output_dir) / MASTER_CKPT))
            if weights:
                weights.pop()

        def load_master(models, input_dir):
            from safetensors.torch import load_file

            master.load_state_dict(load_file(str(Path(input_dir) / MASTER_CKPT), device=str(acc.device)))
            models.pop()
        acc.register_save_state_pre_hook(save_master)
        acc.register_load_state_pre_hook(load_master)
    if not cfg.full:  # checkpoints hold the adapter only, not the frozen base
        def save_hook(models, weights, output_dir):
            if acc.is_main_process:
                from safetensors.torch import save_file

                save_file(tm.lora_state_dict(acc.unwrap_model(models[0])), str(Path(output_dir) / LORA_CKPT))
            if weights:
                weights.pop()

        def load_hook(models, input_dir):
            from safetensors.torch import load_file

            tm.load_lora_state_dict(acc.unwrap_model(models.pop()), load_file(str(Path(input_dir) / LORA_CKPT)))
        acc.register_save_state_pre_hook(save_hook)
        acc.register_load_state_pre_hook(load_hook)
    return model, policy, reference, opt, params, master


@torch.no_grad()
def _cache_latents(model, pairs: PreferencePairs, batch_size: int | None = None) -> torch.Tensor:
    """VAE latents of every pair, (N, 2, C, h, w) [winner, loser], kept on the model's device.

    ``batch_size`` pairs are decoded, then their winners and losers encoded together, at a time; None: 64 pairs
    in encoder calls of 8 images (``encode_images``' default), but on a GPU for small latents (EmojiWorld's) 512
    pairs in calls of as many images as the sampler decodes at once there (``auto_batch``: 1,024 where memory
    allows). At 8 images a call the pipeline's 3,780 pairs took 946 encoder calls and SafetyDPO's 1,890
    harmful ones 472 more: 14 s of the training's set-up on an H100 with their PNGs' decoding (BENCHMARKS.md,
    "Thirty-eighth round"). The calls are asynchronous, so the next batch's PNGs decode on the CPU while the GPU
    encodes. Another batch rounds the GPU's latents otherwise in the last bits."""
    from scdpo.models.sampler_config import DEFAULT_VAE_BATCH, SamplerConfig
    from scdpo.models.sampling import batch_sizes

    vae_batch = batch_sizes(model, SamplerConfig())[1]
    small_on_gpu = vae_batch > DEFAULT_VAE_BATCH
    batch_size = batch_size or (512 if small_on_gpu else 64)
    encode = vae_batch if small_on_gpu else DEFAULT_VAE_BATCH
    out = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="caching latents", unit="batch"):
        items = [pairs[i] for i in range(start, min(start + batch_size, len(pairs)))]
        images = torch.stack([it["image_w"] for it in items] + [it["image_l"] for it in items])
        w, l_ = model.encode_images(images, batch_size=encode).chunk(2)
        out.append(torch.stack([w, l_], 1))
    return torch.cat(out)


def _accumulate(cfg, acc, model, policy, reference, loader, loss_fn, state, prog, cache, hardness=None,
                bank=None, predict=None, prompts=None, train_predict=None) -> list[dict]:
    """Forward and backward passes of one optimizer step's micro-batches; their statistics
    (``hardness``: the pairs' running logits, read and observed with focus_signal pair; ``bank``:
    the safe anchor's state bank with anchor_refresh > 1; ``predict``: the anchor trajectory's
    UNet call, CUDA-graphed with cuda_graphs, as ``train_predict`` is the policy's call with gradients;
    ``prompts``: the PromptBank of anchor_p4d_every)."""
    micro_stats = []
    for micro in range(cfg.grad_accum):
        batch = next(loader)
        # keyed by where this process's slice starts in the data stream, not by its rank: N processes
        # then draw what one process draws with N times the accumulation (tests/test_trainer_ddp.py)
        gen = step_generator(cfg.seed, prog.samples + acc.process_index * cfg.batch_size, 0)
        last = micro == cfg.grad_accum - 1  # gradients are all-reduced on the last micro-batch only
        with (contextlib.nullcontext() if last else acc.no_sync(policy)), acc.autocast(), \
                attention_backend(cfg.attention, acc.device):
            anchor = latents = None
            if cfg.anchor_weight > 0:
                latents = pair_latents(model, batch, cache) if cfg.anchor_states == "winner" else None
                winners = None if latents is None else latents[0]
                anchor = anchor_inputs(cfg, model, policy, reference, batch, gen, winners, bank, predict)
                if prompts is not None and micro == 0 and prog.step % cfg.anchor_p4d_every == 0:
                    # (k) draws from streams of its own, so the micro-batch's draws stay what they are without it
                    prompts.search(model, policy, reference, anchor,
                                   step_generator(cfg.seed, prog.step, 10_000 + acc.process_index))
                if prompts is not None:
                    pick = step_generator(cfg.seed, prog.samples + acc.process_index * cfg.batch_size, 1)
                    anchor = with_bank(cfg, model, anchor, prompts, pick)
                anchor = adversarial_anchor(cfg, model, policy, anchor)
            errors = pair_errors(model, policy, reference, batch, gen, caption_dropout=cfg.caption_dropout,
                                 cache=cache, timesteps=(cfg.min_timestep, cfg.max_timestep),
                                 clean_timesteps=None if cfg.clean_min_timestep is None else
                                 (cfg.clean_min_timestep, cfg.max_timestep),
                                 extra=None if anchor is None else anchor[:3], latents=latents,
                                 predict=train_predict)
            info = batch_info(batch, acc.device, errors)
            if hardness is not None:
                info.hardness = hardness.lookup(batch["index"])
                hardness.observe(batch["index"], dpo_logit(*errors.errors, cfg.beta))
            loss_vec, stats = loss_fn(*errors.errors, info, cfg, state)
            loss = loss_vec.mean()
            if cfg.anchor_weight > 0:  # docs/method.md, (f)-(h): (beta/2) (q sum(A) + q_c sum(C) + q_u sum(U)) / B
                if anchor is None:
                    a, c, u = torch.zeros(1, device=loss.device), loss.new_zeros(0), loss.new_zeros(0)
                else:
                    a, c, u = anchor_terms(errors.extra, anchor,
                                           cfg.anchor_guidance if cfg.anchor_clean_guided else None)
                n_hold, n_u = len(c), len(u)
                # the anchor's expression as it was before (g), so runs without the hold round alike
                loss = loss + cfg.anchor_weight * 0.5 * cfg.beta * a.sum() / len(batch["caption"])
                if n_hold:  # each clean prompt at its hold weight (1 unless anchor_clean_focus)
                    w = to_device(torch.as_tensor(batch["hold_weight"])[clean_rows(batch)], c.device, c.dtype)
                    loss = loss + cfg.anchor_clean_weight * 0.5 * cfg.beta * (c * w).sum() / len(batch["caption"])
                if n_u and cfg.anchor_uncond_weight > 0:
                    loss = loss + cfg.anchor_uncond_weight * 0.5 * cfg.beta * u.sum() / len(batch["caption"])
                stats["anchor"] = a.mean() if len(a) else a.new_zeros(())
                if cfg.anchor_clean_weight > 0:
                    stats["hold"] = c.mean() if len(c) else c.new_zeros(())
                if cfg.anchor_uncond_weight > 0:
                    stats["uncond"] = u.mean() if len(u) else u.new_zeros(())
        acc.backward(loss / cfg.grad_accum)
        micro_stats.append({"loss": loss.detach(), **{k: v.detach().float() for k, v in stats.items()}})
        prog.samples += cfg.batch_size * acc.num_processes
    return micro_stats


def pack_stats(micro_stats: list[dict], grad_norm) -> tuple[list[str], torch.Tensor]:
    """A step's statistics as one vector on the device: each key's mean over the micro-batches, then
    whether any micro-batch's loss is non-finite, then the gradient norm (read by :func:`unpack_stats`)."""
    keys = sorted(micro_stats[0])
    local = torch.stack([torch.stack([s[k] for s in micro_stats]).mean() for k in keys])
    bad = (~torch.isfinite(torch.stack([s["loss"] for s in micro_stats]))).any().float().reshape(1)
    norm = torch.as_tensor(grad_norm, dtype=torch.float32, device=local.device).reshape(1)
    return keys, torch.cat([local, bad, norm])


def unpack_stats(keys: list[str], values: list[float]) -> tuple[dict[str, float], float, bool]:
    """:func:`pack_stats`'s vector, read back: the statistics, the gradient norm, whether the step is finite."""
    finite = values[-2] == 0 and math.isfinite(values[-1])
    return dict(zip(keys, values[:len(keys)])), values[-1], finite


def _reduce(acc, micro_stats: list[dict], grad_norm) -> tuple[dict[str, float], float, bool]:
    """Step statistics averaged over micro-batches and processes, the gradient norm, and whether
    the step is finite on every process: one all-reduce and one device sync per step."""
    keys, vector = pack_stats(micro_stats, grad_norm)
    return unpack_stats(keys, acc.reduce(vector, "mean").tolist())


def _lr(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def _require_finite(acc, params, prog: Progress, out: Path) -> None:
    """Refuse to checkpoint or export NaN / infinite weights (e.g. after a too-high --lr): the
    check is one pass over the trainable tensors, agreed by every process."""
    bad = sum(int(not torch.isfinite(p.detach()).all()) for p in params)
    if acc.reduce(torch.tensor([float(bad)], device=acc.device), "sum").item() == 0:
        return
    ckpts = checkpoints(out)
    acc.end_training()
    raise TrainingDiverged(
        f"the weights hold NaN or infinity at step {prog.step}; nothing saved or exported. The last checkpoint is "
        + (f"{ckpts[-1]} (continue with --resume, e.g. with a lower --lr or --beta)" if ckpts else
           "none: start over with a lower --lr or --beta"))


def train(cfg: TrainConfig) -> dict:
    """Train; returns the final metrics (also written to ``out/metrics.json``).

    The main process holds ``out``'s lock for the whole run (a second run into the same folder is
    refused); a run without ``resume`` refuses a folder holding another run's checkpoints unless
    ``overwrite`` (docs/reliability.md)."""
    import os

    from scdpo.models.speed import compile_cache
    from scdpo.utils.lock import folder_lock

    out = Path(cfg.out)
    main = int(os.environ.get("RANK", "0")) == 0  # before accelerate exists: the launcher's global rank
    with folder_lock(out, "scdpo train") if main else contextlib.nullcontext():
        if main and not cfg.resume:
            check_fresh(out, cfg.overwrite, settings(cfg))
        with compile_cache(cfg.compile_cache, save=main):  # every rank reads, the main one writes
            return _train(cfg, out)


def _train(cfg: TrainConfig, out: Path) -> dict:
    from accelerate.utils import DistributedType

    from scdpo.train.validate import Validator, validation_records
    from scdpo.utils.phases import Phases

    phases = Phases()  # metrics.json's "seconds": where the wall time went
    out.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(cfg, out)
    torch.manual_seed(cfg.seed)  # LoRA init
    model, policy, reference, opt, params, master = _build(cfg, acc)
    unet = acc.unwrap_model(policy)
    loss_fn = get_loss(cfg.loss)
    pairs = PreferencePairs(cfg.dataset, model.resolution, need_costs=cfg.uses_costs, resize=cfg.resize,
                            need_safe=cfg.anchor_weight > 0, need_rewards=cfg.anchor_clean_focus > 0,
                            kinds=cfg.pair_kinds)
    pairs.hold_weight = hold_weights(pairs.reward_min, pairs.harmful, cfg.anchor_clean_focus)
    pairs.check_sizes()
    global_batch = cfg.batch_size * acc.num_processes
    meta = {"fingerprint": fingerprint(cfg, len(pairs), global_batch, acc.mixed_precision)}
    prog, state = Progress(), LossState(lam=cfg.lambda_init)
    hardness = None
    if "pair_hardness" in loss_fn.state(cfg):
        from scdpo.train.focus import PairHardness

        hardness = PairHardness(len(pairs), acc.device, cfg.focus_ema)
        hardness.register(acc)  # before resume: its state is part of the checkpoint
    probe = None
    if cfg.on_policy_constraint:
        from scdpo.train.constraint import build_probe

        probe = build_probe(cfg, pairs, acc.device)
    bank = build_bank(cfg, pairs)
    prompts = None
    if cfg.anchor_p4d_every > 0:
        prompts = PromptBank(model, cfg.anchor_p4d_steps, cfg.anchor_p4d_rows)
        prompts.register(acc)  # before resume: the bank is part of the checkpoint
    predict = train_predict = None
    if cfg.uses_cuda_graphs(acc.device.type):
        # one process only: a DDP-wrapped policy's forward is not a fixed kernel sequence to record
        graphs_on = acc.num_processes == 1 and cfg.cuda_graphs_can_run(acc.device.type)
        trainable = [p for p in unet.parameters() if p.requires_grad]
        predict = GraphedPredict(model, enabled=graphs_on, params=trainable)  # the anchor's policy trajectory
        train_predict = GraphedTrainPredict(model, trainable, enabled=graphs_on)
        reference.predict = GraphedPredict(model, enabled=graphs_on)  # adapters off: frozen weights only
        if not predict.enabled and cfg.cuda_graphs:  # asked for (unset, it is on only where it can run)
            log.warning("--cuda-graphs needs one process on a CUDA device, without gradient checkpointing, "
                        "--workers or --compile; every UNet call runs eagerly")
        elif not predict.enabled:
            log.info("cuda graphs: off for this run (%d processes); every UNet call runs eagerly", acc.num_processes)
        elif cfg.anchor_weight > 0:
            log.warning("--cuda-graphs with the safe anchor is experimental: its anchor-trajectory runs on H200s died "
                        "with a CUDA illegal memory access at step 2 before the stale weight cast was fixed; an H100 "
                        "ran it since, no H200 has (BENCHMARKS.md, thirtieth to thirty-second rounds)")
        elif cfg.cuda_graphs is None:
            log.info("cuda graphs: on (the default for an EmojiWorld LoRA on CUDA without the safe anchor; "
                     "--no-cuda-graphs turns them off)")
    elif cfg.cuda_graphs is None and acc.device.type == "cuda" and str(cfg.model) == "emojiworld" and cfg.anchor_weight > 0:
        log.info("cuda graphs: off (with the safe anchor they run only when asked for: --cuda-graphs, experimental)")
    if cfg.resume and (resumed := resume(acc, out, meta)) is not None:
        prog, state = resumed
    cache = _cache_latents(model, pairs) if cfg.cache_latents else None
    pairs.decode = cache is None
    sampler = StreamSampler(len(pairs), cfg.batch_size, seed=cfg.seed, start=prog.samples,
                            num_processes=acc.num_processes, process_index=acc.process_index)
    loader = iter(torch.utils.data.DataLoader(pairs, batch_sampler=sampler, num_workers=cfg.workers,
                                              pin_memory=acc.device.type == "cuda", persistent_workers=cfg.workers > 0))
    validator = Validator(validation_records(cfg.validate_prompts, cfg.validate_n), cfg.validate_steps,
                          cfg.validate_judge, acc.device)
    fsdp = acc.distributed_type == DistributedType.FSDP

    def validate(name: str) -> dict:
        """Main process samples with the unwrapped policy; under FSDP all ranks must run the forward."""
        numbers = {}
        if fsdp or acc.is_main_process:
            with tm.using_unet(model, policy if fsdp else unet):
                numbers = validator(model, out / "samples" / f"{name}.png", save=acc.is_main_process)
        acc.wait_for_everyone()
        return numbers

    acc.init_trackers("scdpo-train", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                             if isinstance(v, (int, float, str, bool))})
    if acc.is_main_process:
        atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1))
        log.info("%d pairs (%d ties dropped, %d filtered); global batch %d x %d accumulation",
                 len(pairs), pairs.ties, pairs.filtered, global_batch, cfg.grad_accum)
    bar = tqdm(total=cfg.max_steps, initial=prog.step, desc=f"train {cfg.loss}", disable=not acc.is_main_process)
    scalars: dict[str, float] = {}
    phases.mark("setup")
    first = prog.step + 1  # its step records the CUDA graphs or compiles, and picks cuDNN's algorithms
    while prog.step < cfg.max_steps:
        if bank is not None and prog.step % cfg.anchor_refresh == 0:
            bank.refresh(model, policy, prog.step, acc.process_index, predict)
        micro_stats = _accumulate(cfg, acc, model, policy, reference, loader, loss_fn, state, prog, cache, hardness,
                                  bank, predict, prompts, train_predict)
        if master is not None:
            master.grads_to_master()  # clip and step in fp32
        grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        step_stats, grad_norm, finite = _reduce(acc, micro_stats, grad_norm)
        lr = _lr(cfg, prog.step)
        if finite or acc.scaler is not None:  # fp16: the grad scaler skips overflowing steps itself
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            if master is not None:
                master.master_to_model()
        opt.zero_grad(set_to_none=True)
        prog.step += 1
        bar.update(1)
        if prog.step == first:
            phases.mark("first step")
        if finite:
            prog.nonfinite_in_row = 0
            update_state(state, step_stats, cfg)
            if hardness is not None:
                hardness.commit(acc)
            if probe is not None and prog.step % cfg.constraint_every == 0:
                with tm.using_unet(model, policy if fsdp else unet):
                    dual_ascent(state, probe(acc, model), cfg)
        else:
            if hardness is not None:
                hardness.discard()
            prog.nonfinite_total += 1
            prog.nonfinite_in_row += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", prog.step,
                        prog.nonfinite_in_row)
            if prog.nonfinite_in_row >= cfg.max_nonfinite_in_row:
                ckpts = checkpoints(out)
                acc.end_training()
                raise TrainingDiverged(
                    f"{prog.nonfinite_in_row} non-finite steps in a row (up to step {prog.step}); stopped without "
                    "saving. The last good checkpoint is "
                    + (f"{ckpts[-1]} (continue with --resume, e.g. with a lower --lr or --beta)" if ckpts else
                       "none: no checkpoint was written yet"))
        if prog.step % cfg.log_every == 0 or prog.step == 1 or prog.step == cfg.max_steps:
            scalars = {**step_stats, "grad_norm": grad_norm, "lr": lr, "lambda": state.lam,
                       "nonfinite_total": prog.nonfinite_total,
                       **({"policy_measure": state.measured} if state.measured is not None else {})}
            acc.log(scalars, step=prog.step)
            bar.set_postfix({"loss": f"{scalars['loss']:.4g}", "acc": f"{scalars['implicit_acc']:.2f}",
                             "margin": f"{scalars['margin']:.3g}", "lambda": f"{state.lam:.3g}"})
        if prog.step % cfg.checkpoint_every == 0:
            _require_finite(acc, params, prog, out)
            with phases("checkpoints"):
                save_checkpoint(acc, out, prog, state, meta, cfg.keep_checkpoints)
        if cfg.validate_every and prog.step % cfg.validate_every == 0 and prog.step < cfg.max_steps:
            with phases("validation"):
                numbers = validate(f"step-{prog.step:07d}")
            if numbers:
                acc.log({f"val/{k}": v for k, v in numbers.items()}, step=prog.step)
    bar.close()
    phases.mark("steps")
    _require_finite(acc, params, prog, out)
    with phases("checkpoints"):
        save_checkpoint(acc, out, prog, state, meta, cfg.keep_checkpoints)
    with phases("validation"):
        val = validate("final")
    metrics = {"steps": prog.step, "pairs": len(pairs), "ties_dropped": pairs.ties, "filtered": pairs.filtered,
               "nonfinite_total": prog.nonfinite_total, "lambda": state.lam,
               **scalars, **{f"val_{k}": v for k, v in val.items()}}
    if train_predict is not None:  # what --cuda-graphs did: the policy calls replayed, and whether graphs stayed on
        metrics.update(cuda_graph_replays=train_predict.replays, cuda_graphs_on=train_predict.enabled)
    if val:
        acc.log({f"val/{k}": v for k, v in val.items()}, step=prog.step)
    if master is not None:  # export the fp32 master weights, not their bf16 rounding
        unet.to(torch.float32).load_state_dict(master.state_dict(), strict=False)
    _export(cfg, acc, model, policy, unet, out)
    phases.mark("export")
    metrics["seconds"] = phases.rounded()
    if acc.is_main_process:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    acc.end_training()
    return metrics


def _export(cfg: TrainConfig, acc, model, policy, unet, out: Path) -> None:
    """The LoRA (diffusers format) or the full UNet, and with --merge a whole pipeline folder."""
    from accelerate.utils import DistributedType

    if cfg.full and acc.distributed_type == DistributedType.FSDP:
        state = acc.get_state_dict(policy)  # gathers the shards (a collective: every rank calls it)
        if acc.is_main_process:
            unet = type(unet).from_config(unet.config)
            unet.load_state_dict(state)
    if not acc.is_main_process:
        return
    if cfg.full:
        tm.save_unet(unet, out / model.adapter.denoiser)  # unet/ (SD3: transformer/), as diffusers names it
    else:
        tm.save_lora(unet, out, model.family)
    if cfg.merge:
        tm.export_pipeline(cfg.model, out / "pipeline", lora_dir=None if cfg.full else out,
                           unet=unet if cfg.full else None, device=acc.device)
