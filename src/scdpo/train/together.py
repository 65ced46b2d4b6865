"""`scdpo train --together`: several LoRA trainings in one process, one UNet call a step (issue 16).

A sweep's runs (the pipeline's six methods, a recipe's seeds) share the base model, the data and the
batch, and differ in their loss settings and seeds. Trained side by side, one process each, six
EmojiWorld trainings fill an H100 at 51.9 steps/s in all: each of their calls is too small for it.
Here their adapters sit on one frozen UNet (:mod:`scdpo.train.stacked`), and a step makes one policy
call for all runs (run k's rows get run k's adapter), one reference call on the rows of each data
stream (runs of one seed and one pair filter draw the same batch, noise and timesteps, so their frozen
reference predicts the same numbers once), one AdamW step and one read of the statistics.

Each run is the training :func:`scdpo.train.trainer.train` would make with its config: the same
adapter initialisation, data order, noise, timesteps and loss, its own AdamW update (one optimizer
holds every run's tensors; its update is elementwise), gradient clipping, lambda, focusing state,
skipped steps, logs, grids and exported LoRA (tests/test_together.py: equal to separate trainings but
for rounding). What may differ between the runs is :data:`PER_RUN`; every other setting must be
equal, and a few are refused (:func:`check_runs`). Checkpoints hold each run's adapter, its AdamW
state (safetensors) and ``trainer_state.json``; a ``--together`` run resumes from them, a separate run
does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from scdpo.models.t2i import Conditioning
from scdpo.train import stacked
from scdpo.train.checkpoint import STATE_FILE, Progress, check_fresh, checkpoints
from scdpo.train.config import TrainConfig
from scdpo.train.data import PreferencePairs, StreamSampler
from scdpo.train.fingerprint import differences, fingerprint, settings
from scdpo.train.losses import LossState, dpo_logit, get_loss, update_state
from scdpo.train.step import batch_info, errors_of, pair_inputs, step_generator
from scdpo.utils.io import atomic_write_text

log = logging.getLogger(__name__)
OPT_CKPT = "optimizer.safetensors"
HARDNESS_CKPT = "pair_hardness.safetensors"

#: what may differ between runs trained together: the loss's settings, the seed, where a run writes
PER_RUN = frozenset({
    "out", "seed", "merge", "kinds", "loss", "beta", "cost_margin", "constraint", "lambda_init", "lambda_lr",
    "cost_budget", "constraint_form", "focus_gamma", "focus_signal", "focus_ema", "winner_weight", "preserve_weight",
})


def check_runs(cfgs: list[TrainConfig]) -> None:
    """Refuse what one process cannot train together, in one line naming the setting and the fix."""
    if len(cfgs) < 1:
        raise ValueError("--together needs at least one run")
    outs = [str(Path(c.out).resolve()) for c in cfgs]
    if len(set(outs)) != len(outs):
        raise ValueError("two runs trained together write to the same --out; give each its own")
    first = cfgs[0]
    for f in dataclasses.fields(TrainConfig):
        if f.name in PER_RUN:
            continue
        values = {json.dumps(getattr(c, f.name), default=str) for c in cfgs}
        if len(values) > 1:
            raise ValueError(f"runs trained together share {f.name}, but theirs differ ({', '.join(sorted(values))});"
                             f" give them one value, or train them separately (drop --together)")
    for c in cfgs:
        if c.on_policy_constraint:
            raise ValueError(f"{c.out}: the on-policy constraint (constraint_source: policy) samples each policy; "
                             "train it separately (drop --together)")
    refused = {"full": first.full, "anchor_weight": first.anchor_weight > 0, "compile": first.compile is True,
               "compile_mode": first.compile_mode is not None, "compile_cache": first.compile_cache is not None,
               "autocast": first.autocast is False, "mixed_precision": first.mixed_precision == "fp16"}
    for key, bad in refused.items():
        if bad:
            raise ValueError(f"--together trains LoRAs with autocast in bf16 or fp32, without the safe anchor or "
                             f"torch.compile; {key} {getattr(first, key)!r} is not: drop it, or drop --together")
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--together runs in one process: launch it without `accelerate launch`, or drop --together")


class _OneProcess:
    """What :func:`scdpo.utils.checkpoints.save_checkpoint` asks of accelerate, for one process."""

    is_main_process = True

    def wait_for_everyone(self):
        pass


@dataclasses.dataclass
class _Stream:
    """One data stream: the pairs a seed and a pair filter draw, shared by the runs that have both."""

    pairs: PreferencePairs
    cache: torch.Tensor | None
    sampler: StreamSampler | None
    loader: object
    seed: int


@dataclasses.dataclass
class _Run:
    cfg: TrainConfig
    index: int
    stream: int
    loss_fn: object
    params: list
    state: LossState
    meta: dict
    hardness: object = None
    writer: object = None
    scalars: dict = dataclasses.field(default_factory=dict)
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0

    def progress(self, prog: Progress) -> Progress:
        """The shared step and stream position with this run's own skipped-step counters."""
        return dataclasses.replace(prog, nonfinite_total=self.nonfinite_total, nonfinite_in_row=self.nonfinite_in_row)


def train_together(cfgs: list[TrainConfig]) -> list[dict]:
    """Train every run of ``cfgs`` in this process; returns each run's final metrics (also written
    to its ``out/metrics.json``). Every run's folder is locked for the whole training."""
    from scdpo.utils.lock import folder_lock

    check_runs(cfgs)
    with contextlib.ExitStack() as held:
        for c in cfgs:
            held.enter_context(folder_lock(Path(c.out), "scdpo train"))
            if not c.resume:
                check_fresh(Path(c.out), c.overwrite, settings(c))
        return _train(cfgs)


def _streams(cfgs, model, device) -> tuple[list[_Stream], list[int]]:
    """The data streams of ``cfgs`` (one per seed and pair filter) and each run's stream. Streams of one
    pair filter share its pairs and their latent cache."""
    from scdpo.train.trainer import _cache_latents

    base, data, keys, streams, of_run = cfgs[0], {}, {}, [], []
    # the filters that keep every pair first: a narrower filter's latents are then rows of theirs
    for kinds in sorted({c.pair_kinds for c in cfgs}, key=lambda k: (k is not None, str(k))):
        costs = any(r.uses_costs for r in cfgs if r.pair_kinds == kinds)
        pairs = PreferencePairs(base.dataset, model.resolution, need_costs=costs, resize=base.resize, kinds=kinds)
        pairs.check_sizes()
        cache = None
        if base.cache_latents:
            cache = next((_rows_of(pairs, *had) for had in data.values()), None)
            cache = _cache_latents(model, pairs) if cache is None else cache
        pairs.decode = cache is None
        data[kinds] = pairs, cache
    for c in cfgs:
        key = (c.seed, c.pair_kinds)
        if key not in keys:
            pairs, cache = data[c.pair_kinds]
            keys[key] = len(streams)
            streams.append(_Stream(pairs, cache, None, None, c.seed))
        of_run.append(keys[key])
    return streams, of_run


def _rows_of(pairs: PreferencePairs, other: PreferencePairs, cache: torch.Tensor) -> torch.Tensor | None:
    """``pairs``' latents taken from ``other``'s ``cache`` when every pair of ``pairs`` is one of ``other``'s
    (the same dataset, and each pair's winner and loser follow its row's label either way): SafetyDPO's harmful
    pairs out of the whole dataset's, instead of decoding and encoding them again. None otherwise."""
    if not np.isin(pairs.rows, other.rows).all():
        return None
    return cache[torch.as_tensor(np.searchsorted(other.rows, pairs.rows), device=cache.device)]


def _start_loaders(streams: list[_Stream], start: int, cfg: TrainConfig, device) -> None:
    for s in streams:
        s.sampler = StreamSampler(len(s.pairs), cfg.batch_size, seed=s.seed, start=start)
        s.loader = iter(torch.utils.data.DataLoader(s.pairs, batch_sampler=s.sampler, num_workers=cfg.workers,
                                                    pin_memory=device.type == "cuda",
                                                    persistent_workers=cfg.workers > 0))


def _save(run: _Run, unet, opt, prog: Progress) -> None:
    """``out/checkpoints/step-N`` of one run (adapter, AdamW state, hardness, trainer_state.json),
    written under a temporary name and renamed; nothing is rotated here (:func:`_save_all`)."""
    from safetensors.torch import save_file

    from scdpo.train.trainer import LORA_CKPT
    from scdpo.utils import checkpoints as shared

    class Writer(_OneProcess):
        def save_state(self, path, safe_serialization=True):
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            save_file(stacked.run_state(unet, run.index), str(path / LORA_CKPT))
            state = {}
            for i, p in enumerate(run.params):
                for k, v in opt.state.get(p, {}).items():
                    state[f"{i}.{k}"] = v.detach().reshape(v.shape).contiguous().cpu()
            save_file(state, str(path / OPT_CKPT))
            if run.hardness is not None:
                save_file(run.hardness.state_dict(), str(path / HARDNESS_CKPT))

    record = {**dataclasses.asdict(run.progress(prog)), "loss_state": run.state.to_dict(), **run.meta, "together": True}
    shared.save_checkpoint(Writer(), Path(run.cfg.out), prog.step, 1 << 30,
                           extra={STATE_FILE: json.dumps(record, indent=1)})


def _save_all(runs: list[_Run], unet, opt, prog: Progress) -> None:
    """Every run's checkpoint of this step, then the rotation: a crash between two runs' writes
    leaves every run its previous checkpoint, so they still have a step in common to resume from.
    NaN or infinite weights in any run: nothing is written."""
    import shutil

    from scdpo.train.trainer import TrainingDiverged

    bad = [r.cfg.out for r in runs if not all(bool(torch.isfinite(p.detach()).all()) for p in r.params)]
    if bad:
        raise TrainingDiverged(f"the weights of {', '.join(bad)} hold NaN or infinity at step {prog.step}; nothing "
                               "saved. Resume every run with --resume --together and a lower --lr or --beta, or "
                               "resume the others without those runs")
    for run in runs:
        _save(run, unet, opt, prog)
    for run in runs:
        for old in checkpoints(Path(run.cfg.out))[:-run.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def _resume(runs: list[_Run], unet, opt) -> Progress | None:
    """Load every run's checkpoint of the newest step that all of them have (made by ``--together``);
    None when no run has one."""
    found = [{c.name: c for c in checkpoints(Path(r.cfg.out))} for r in runs]
    if not any(found):
        log.warning("--resume: no checkpoint in any run's folder, starting from scratch")
        return None
    common = set.intersection(*(set(f) for f in found))
    if not common:
        lacking = [r.cfg.out for r, f in zip(runs, found) if not f]
        raise ValueError("--resume: the runs have no checkpoint step in common"
                         + (f" ({', '.join(lacking)} has none)" if lacking else "")
                         + "; resume those that have one, or start the others over with --overwrite")
    step = max(common, key=lambda name: int(name.split("-")[1]))
    prog = None
    for run, ckpts in zip(runs, found):
        prog = _load(run, unet, opt, ckpts[step])
    return prog


def _load(run: _Run, unet, opt, ckpt: Path) -> Progress:
    """One run's checkpoint into its adapter, optimizer, hardness and loss state; its progress."""
    from safetensors.torch import load_file

    from scdpo.train.trainer import LORA_CKPT

    try:
        record = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {ckpt}: {STATE_FILE} is unreadable ({err}); delete this checkpoint folder to "
                         "resume from the one before, or start over with --overwrite") from None
    if not record.get("together"):
        raise ValueError(f"--resume: {ckpt} was written by a separate training; resume it without --together")
    diff = differences(record.get("fingerprint"), run.meta["fingerprint"])
    if diff:
        raise ValueError(f"--resume: checkpoint {ckpt} belongs to another run: {'; '.join(diff)}. Resume with the "
                         "same settings and data, start over with --overwrite, or use another --out")
    try:
        stacked.load_run_state(unet, run.index, load_file(str(ckpt / LORA_CKPT)))
        saved = load_file(str(ckpt / OPT_CKPT))
        for i, p in enumerate(run.params):
            state = {k.split(".", 1)[1]: v for k, v in saved.items() if k.split(".", 1)[0] == str(i)}
            for name, v in state.items():  # AdamW's own casts: the step a float32 scalar, the moments the tensor's
                if name != "step" and v.shape != p.shape:
                    raise ValueError(f"AdamW's {name} of tensor {i} is {tuple(v.shape)}, the adapter's {tuple(p.shape)}")
                state[name] = v.to(p.device, torch.float32) if name == "step" else v.to(p.device, p.dtype)
            if state:
                opt.state[p] = state
        if run.hardness is not None:
            run.hardness.load_state_dict(load_file(str(ckpt / HARDNESS_CKPT)))
        run.state = LossState.from_dict(record["loss_state"])
        prog = Progress(**{f.name: int(record[f.name]) for f in dataclasses.fields(Progress)})
    except Exception as err:  # noqa: BLE001  (safetensors, torch and json each raise their own types)
        first = (str(err).splitlines() or [""])[0]
        raise ValueError(f"checkpoint {ckpt} could not be restored ({type(err).__name__}: {first}); delete this "
                         "checkpoint folder to resume from the one before, or start over with --overwrite") from None
    run.nonfinite_total, run.nonfinite_in_row = prog.nonfinite_total, prog.nonfinite_in_row
    log.info("resumed %s from %s at step %d", run.cfg.out, ckpt, prog.step)
    return prog


def _train(cfgs: list[TrainConfig]) -> list[dict]:
    runs: list[_Run] = []
    try:
        return _train_runs(cfgs, runs)
    finally:  # whatever stopped the training, the logs written so far reach the disk
        for run in runs:
            if run.writer is not None:
                run.writer.close()


def _train_runs(cfgs: list[TrainConfig], runs: list[_Run]) -> list[dict]:
    """The training of :func:`train_together`; ``runs`` (empty) is filled with the runs' state."""
    from torch.utils.tensorboard import SummaryWriter

    from scdpo.models.graphs import GraphedPredict
    from scdpo.models.graphs_train import GraphedTrainPredict
    from scdpo.models.sampler_config import SMALL_LATENT
    from scdpo.models.speed import attention_backend
    from scdpo.models.t2i import T2IModel
    from scdpo.train.trainer import TrainingDiverged, _lr, check_timesteps, pack_stats, unpack_stats
    from scdpo.train.validate import Validator, validation_records
    from scdpo.utils.checkpoints import resolve_mixed_precision
    from scdpo.utils.phases import Phases

    phases = Phases()  # each run's metrics.json: where the wall time went ("seconds")
    base = cfgs[0]
    device = torch.device(base.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mp = resolve_mixed_precision(base.mixed_precision)
    if mp == "fp16":
        raise ValueError("--together computes in bf16 or fp32, and mixed_precision auto chose fp16 here: pass "
                         "--mixed-precision bf16 (or no), or drop --together")
    half = torch.bfloat16 if mp == "bf16" else torch.float32
    model = T2IModel.from_pretrained(base.model, device=device, dtype=half)
    check_timesteps(base, model)
    unet = model.unet
    lora = (base.lora_rank, base.lora_alpha, base.lora_targets)
    layout = stacked.stack(unet, [stacked.initial_adapters(unet, c.seed, *lora) for c in cfgs], *lora)
    if base.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if base.compiles(device.type):  # unset, a separate run would compile here
        log.info("compile: off (--together does not compile; a separate training would, on this device)")
    unet.train()
    streams, of_run = _streams(cfgs, model, device)
    for k, c in enumerate(cfgs):
        params = stacked.run_parameters(unet, k)
        run = _Run(c, k, of_run[k], get_loss(c.loss), params, LossState(lam=c.lambda_init),
                   {"fingerprint": fingerprint(c, len(streams[of_run[k]].pairs), c.batch_size, mp)})
        if "pair_hardness" in run.loss_fn.state(c):
            from scdpo.train.focus import PairHardness

            run.hardness = PairHardness(len(streams[run.stream].pairs), device, c.focus_ema)
        runs.append(run)
    # one AdamW for every run: its update is elementwise and the runs share lr, betas and weight decay, so each
    # run's tensors move as that run's own AdamW would move them; a run's skipped step is its tensors left
    # without gradients, which AdamW then skips (their step counts included), as a separate run skips it
    every = [p for r in runs for p in r.params]
    opt = torch.optim.AdamW(every, lr=base.lr, weight_decay=base.weight_decay, fused=device.type == "cuda")
    prog = (_resume(runs, unet, opt) if base.resume else None) or Progress()
    _start_loaders(streams, prog.samples, base, device)
    graphs = base.uses_cuda_graphs(device.type) and base.cuda_graphs_can_run(device.type) and device.type == "cuda"
    if base.cuda_graphs and not graphs:
        log.warning("--cuda-graphs needs a CUDA device, without gradient checkpointing or --workers; every UNet call "
                    "runs eagerly")
    train_predict = GraphedTrainPredict(model, every, enabled=graphs, pad=False) if graphs else None
    ref_predict = GraphedPredict(model, enabled=graphs, pad=False) if graphs else None
    validator = Validator(validation_records(base.validate_prompts, base.validate_n), base.validate_steps,
                          base.validate_judge, device)

    def autocast():  # as accelerate's bf16 autocast: the frozen base in bf16, the adapters fp32
        return torch.autocast(device.type, dtype=torch.bfloat16) if mp == "bf16" else contextlib.nullcontext()
    for run in runs:
        out = Path(run.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(run.cfg), indent=1))
        run.writer = SummaryWriter(str(out / "logs" / "scdpo-train"))

    def validate(name: str) -> list[dict]:
        paths = [Path(r.cfg.out) / "samples" / f"{name}.png" for r in runs]
        # on a GPU, for small latents (EmojiWorld's), every run's grid in one sampler call (Validator.many): six
        # runs' final grids 1.3-2.1 s against 4.4 s a call a run (one H100); on the CPU, where the arithmetic is the
        # cost, a call a run was faster, and an SD-sized call of every run's rows at once could run out of memory
        # (BENCHMARKS.md, "Forty-second round")
        side = model.resolution // model.vae_scale_factor
        if device.type == "cuda" and side * side <= SMALL_LATENT:
            return validator.many(model, layout, paths)
        vals = []
        for run, path in zip(runs, paths):
            with stacked.rows_per_run(layout, run=run.index):
                vals.append(validator(model, path))
        return vals

    log.info("%d runs together, %d data stream(s); batch %d x %d accumulation", len(runs), len(streams),
             base.batch_size, base.grad_accum)
    bar = tqdm(total=base.max_steps, initial=prog.step, desc=f"train {len(runs)} together")
    phases.mark("setup")
    first = prog.step + 1  # its step records the CUDA graphs and picks cuDNN's algorithms
    while prog.step < base.max_steps:
        micro_stats = [[] for _ in runs]
        for _ in range(base.grad_accum):
            batches, inputs = [], []
            with autocast(), attention_backend(base.attention, device):  # the inputs too, as the trainer's
                for s in streams:
                    batch = next(s.loader)
                    gen = step_generator(s.seed, prog.samples, 0)
                    batches.append(batch)
                    inputs.append(pair_inputs(model, batch, gen, caption_dropout=base.caption_dropout, cache=s.cache,
                                              timesteps=(base.min_timestep, base.max_timestep),
                                              clean_timesteps=None if base.clean_min_timestep is None else
                                              (base.clean_min_timestep, base.max_timestep)))
                rows = len(inputs[0].noisy)
                mine = [inputs[r.stream] for r in runs]
                with stacked.rows_per_run(layout, rows=rows):
                    pred = (train_predict or model.predict)(torch.cat([i.noisy for i in mine]),
                                                            torch.cat([i.t for i in mine]),
                                                            Conditioning.cat([i.cond for i in mine])).float()
                with torch.inference_mode(), stacked.rows_per_run(layout):  # adapters off: the frozen reference
                    ref = (ref_predict or model.predict)(torch.cat([i.noisy for i in inputs]),
                                                         torch.cat([i.t for i in inputs]),
                                                         Conditioning.cat([i.cond for i in inputs]))
            ref = ref.clone().float().split(rows)
            total = 0
            for run, p in zip(runs, pred.split(rows)):
                errors = errors_of(p, ref[run.stream], inputs[run.stream])
                batch = batches[run.stream]
                info = batch_info(batch, device, errors)
                if run.hardness is not None:
                    info.hardness = run.hardness.lookup(batch["index"])
                    run.hardness.observe(batch["index"], dpo_logit(*errors.errors, run.cfg.beta))
                loss_vec, stats = run.loss_fn(*errors.errors, info, run.cfg, run.state)
                loss = loss_vec.mean()
                total = total + loss
                micro_stats[run.index].append({"loss": loss.detach(),
                                               **{k: v.detach().float() for k, v in stats.items()}})
            (total / base.grad_accum).backward()
            prog.samples += base.batch_size
        lr = _lr(base, prog.step)
        prog.step += 1
        bar.update(1)
        max_norm = base.max_grad_norm if base.max_grad_norm > 0 else math.inf
        packed = [pack_stats(micro_stats[r.index], torch.nn.utils.clip_grad_norm_(r.params, max_norm)) for r in runs]
        values = torch.cat([vector for _, vector in packed]).tolist()  # the step's one host sync, for every run
        at = 0
        for run, (keys, vector) in zip(runs, packed):
            step_stats, grad_norm, finite = unpack_stats(keys, values[at:at + len(vector)])
            at += len(vector)
            if finite:
                run.nonfinite_in_row = 0
                update_state(run.state, step_stats, run.cfg)
                if run.hardness is not None:
                    run.hardness.commit()
            else:
                for p in run.params:
                    p.grad = None  # AdamW skips this run's tensors: its update is skipped
                if run.hardness is not None:
                    run.hardness.discard()
                run.nonfinite_total += 1
                run.nonfinite_in_row += 1
                log.warning("%s, step %d: non-finite loss or gradient, update skipped (%d in a row)", run.cfg.out,
                            prog.step, run.nonfinite_in_row)
                if run.nonfinite_in_row >= base.max_nonfinite_in_row:
                    last = checkpoints(Path(run.cfg.out))
                    raise TrainingDiverged(
                        f"{run.cfg.out}: {run.nonfinite_in_row} non-finite steps in a row (up to step {prog.step}); "
                        "every run stopped without saving. " + (f"Their last checkpoints are at {last[-1].name}: "
                        "resume with --resume --together and a lower --lr or --beta, or resume the others without "
                        "this run" if last else "No checkpoint was written yet: start over with a lower --lr or "
                        "--beta, or without this run"))
            if prog.step % base.log_every == 0 or prog.step == 1 or prog.step == base.max_steps:
                run.scalars = {**step_stats, "grad_norm": grad_norm, "lr": lr, "lambda": run.state.lam,
                               "nonfinite_total": run.nonfinite_total}
                for key, value in run.scalars.items():
                    run.writer.add_scalar(key, value, prog.step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        if prog.step % base.log_every == 0 or prog.step == 1:
            bar.set_postfix({Path(r.cfg.out).name: f"{r.scalars.get('loss', math.nan):.4g}" for r in runs[:4]})
        if prog.step == first:
            phases.mark("first step")
        if prog.step % base.checkpoint_every == 0:
            with phases("checkpoints"):
                _save_all(runs, unet, opt, prog)
        if base.validate_every and prog.step % base.validate_every == 0 and prog.step < base.max_steps:
            with phases("validation"):
                for run, val in zip(runs, validate(f"step-{prog.step:07d}")):
                    for key, value in val.items():
                        run.writer.add_scalar(f"val/{key}", value, prog.step)
    bar.close()
    phases.mark("steps")
    with phases("checkpoints"):
        _save_all(runs, unet, opt, prog)
    with phases("validation"):
        vals = validate("final")
    results = []
    for run, val in zip(runs, vals):
        pairs = streams[run.stream].pairs
        results.append({"steps": prog.step, "pairs": len(pairs), "ties_dropped": pairs.ties,
                        "filtered": pairs.filtered, "nonfinite_total": run.nonfinite_total, "lambda": run.state.lam,
                        "together": len(runs), **run.scalars, **{f"val_{k}": v for k, v in val.items()}})
        if train_predict is not None:  # as the trainer reports its graphs: replays of the one shared call
            results[-1].update(cuda_graph_replays=train_predict.replays, cuda_graphs_on=train_predict.enabled)
        for key, value in val.items():
            run.writer.add_scalar(f"val/{key}", value, prog.step)
    _export(runs, unet, model, results, phases)
    return results


def _export(runs: list[_Run], unet, model, results: list[dict], phases) -> None:
    """Each run's LoRA through peft and diffusers (and with ``merge`` its pipeline), then its metrics, with the
    phases' seconds of the whole process (``phases``: :class:`scdpo.utils.phases.Phases`) under "seconds"."""
    from scdpo.train import model as tm

    states = [{k: v.float().cpu() for k, v in stacked.run_state(unet, r.index).items()} for r in runs]
    stacked.unstack(unet)
    cfg = runs[0].cfg
    stacked.save_run(unet, states, [r.cfg.out for r in runs], cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets,
                     model.family)
    for run in runs:
        if run.cfg.merge:
            tm.export_pipeline(run.cfg.model, Path(run.cfg.out) / "pipeline", lora_dir=run.cfg.out, device=model.device)
    phases.mark("export")
    for run, metrics in zip(runs, results):
        metrics["seconds"] = phases.rounded()
        atomic_write_text(Path(run.cfg.out) / "metrics.json", json.dumps(metrics, indent=1))
