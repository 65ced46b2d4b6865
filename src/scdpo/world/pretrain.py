"""Pretraining of the EmojiWorld base model and judge on rendered scenes.

Three stages share one loop (:func:`run`): ``vae`` (the autoencoder), ``judge`` (the independent
concept classifier used by evaluation) and ``unet`` (the denoiser, on the frozen VAE's latents and
MiniLM's token states). Scenes stream from the ``train`` suite and are rendered on the training
device, so there is no dataset on disk and a resumed run sees the same batches it would have seen.
accelerate provides the device, mixed precision, TensorBoard logging and checkpoints.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scdpo.utils.checkpoints import checkpoints, reset_accelerate_state, resolve_mixed_precision, save_checkpoint
from scdpo.world.render import label_matrix, render_scenes, sprite_mask
from scdpo.world.stream import scene_loader
# the config lives in a torch-free module (the command's flags are built without torch)
from scdpo.world.pretrain_config import STAGES, PretrainConfig  # noqa: F401

log = logging.getLogger(__name__)


class _Progress:
    """Step counter saved with accelerate checkpoints (so resume knows where the data stream is)."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, d):
        self.step = int(d["step"])


def _arch(cfg: PretrainConfig):
    from scdpo.world import basemodel as bm

    return bm.BaseModelArch() if cfg.arch == "base" else bm.TINY_ARCH


def _load_vae(path: str, device):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path).requires_grad_(False).eval().to(device)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Generator-like corruptions for the judge: blur, noise and a colour shift, per image."""
    b = len(x)
    r = torch.rand(b, 3, device=x.device)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = torch.where((r[:, 0] < 0.3)[:, None, None, None], blurred, x)
    x = x + torch.randn_like(x) * (0.08 * r[:, 1])[:, None, None, None]
    x = x * (1 + 0.15 * (torch.rand(b, 3, 1, 1, device=x.device) - 0.5))
    return x.clamp(0, 1)


def _build(cfg: PretrainConfig, device):
    """Model to train, frozen helpers, and the per-batch loss for the stage."""
    from scdpo.world import basemodel as bm

    arch = _arch(cfg)
    size = arch.image_size
    if cfg.stage == "vae":
        model = bm.make_vae(arch)

        def loss_fn(scenes):
            x = render_scenes(scenes, size, device) * 2 - 1
            post = model.encode(x).latent_dist
            rec = model.decode(post.sample()).sample.float()
            # sprites carry the content and cover a fraction of the canvas: weight them 4x
            w = 1 + 3 * sprite_mask(scenes, size, device)
            err = rec - x
            l1, l2 = (w * err.abs()).mean(), (w * err.square()).mean()
            kl = post.kl().mean()
            return l1 + l2 + 1e-6 * kl, {"l1": l1, "mse": err.square().mean(), "kl": kl}
        return model, loss_fn, {}

    if cfg.stage == "judge":
        from scdpo.world.judge import Judge, JudgeConfig
        from scdpo.world.vocab import load_vocabulary

        vocab = load_vocabulary()
        model = (Judge.from_pretrained(cfg.init, "cpu") if cfg.init else
                 Judge(JudgeConfig(num_concepts=len(vocab), concepts=vocab.names, image_size=size)))
        vae = _load_vae(cfg.vae, device) if cfg.vae else None
        neg_gen = torch.Generator().manual_seed(cfg.seed + 7)

        def loss_fn(scenes):
            x = render_scenes(scenes, size, device)
            if vae is not None:  # half the batch as the VAE reconstructs it
                h = len(x) // 2
                with torch.no_grad():
                    rec = vae.decode(vae.encode(x[:h] * 2 - 1).latent_dist.mean).sample.float()
                x = torch.cat([(rec.clamp(-1, 1) + 1) / 2, x[h:]])
            y = label_matrix(scenes).to(device)
            if cfg.negatives > 0:  # the first k images become concept-free, with no label
                from scdpo.world.blobs import mixed_negatives

                k = int(round(cfg.negatives * len(x)))
                x = torch.cat([mixed_negatives(x[:k], neg_gen).to(x), x[k:]])
                y = torch.cat([torch.zeros_like(y[:k]), y[k:]])
            logits = model(_augment(x)).float()
            loss = F.binary_cross_entropy_with_logits(logits, y)
            exact = ((logits > 0) == (y > 0.5)).all(1).float().mean()
            return loss, {"exact_match": exact}
        return model, loss_fn, {}

    # unet
    model = bm.make_unet(arch)
    vae = _load_vae(cfg.vae, device)
    text_dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    tokenizer, text_encoder = bm.load_text_encoder(cfg.text_encoder, arch.max_text_tokens, text_dtype)
    text_encoder.to(device)
    sched = bm.make_train_scheduler()
    scale = vae.config.scaling_factor
    alphas = sched.alphas_cumprod.to(device)

    def encode(scenes):
        with torch.no_grad():
            x = render_scenes(scenes, size, device) * 2 - 1
            z = vae.encode(x).latent_dist.mean * scale
            ctx = bm.encode_captions(tokenizer, text_encoder, [s.caption for s in scenes])
        return z, ctx

    empty = bm.encode_captions(tokenizer, text_encoder, [""])[0].float()
    pool = _latent_pool(cfg, encode) if cfg.pool_size else None

    def loss_fn(scenes):
        if pool is None:
            z, ctx = encode(scenes)
        else:  # a random batch of cached latents and token states
            idx = torch.randint(0, len(pool[0]), (cfg.batch_size,), device=device)
            z, ctx = pool[0][idx], pool[1][idx]
        z, ctx = z.float(), ctx.float()
        drop = torch.rand(len(z), device=device) < cfg.cfg_dropout
        ctx = torch.where(drop[:, None, None], empty, ctx)
        noise = torch.randn_like(z)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise  # == sched.add_noise, kept on device
        pred = model(noisy, t, ctx).sample.float()
        mse = (pred - noise).square().mean((1, 2, 3))
        weight = torch.ones_like(mse)
        if cfg.snr_gamma > 0:  # Min-SNR-gamma: down-weight the easy low-noise timesteps
            snr = a.flatten() / (1 - a.flatten())
            weight = snr.clamp(max=cfg.snr_gamma) / snr
        return (weight * mse).mean(), {"mse": mse.detach().mean()}
    return model, loss_fn, {"vae": vae, "tokenizer": tokenizer, "text_encoder": text_encoder, "pool": pool}


def _latent_pool(cfg: PretrainConfig, encode, chunk: int = 1024):
    """Latents and token states of ``train`` scenes 0 .. pool_size-1, computed once and kept on
    the device in half precision (bf16 on CUDA), so a step costs only the UNet pass."""
    from scdpo.world.suites import suite_scenes

    zs, cs = [], []
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    for start in tqdm(range(0, cfg.pool_size, chunk), desc="latent pool", unit="chunk"):
        z, ctx = encode(suite_scenes("train", min(chunk, cfg.pool_size - start), cfg.seed, start=start))
        zs.append(z.to(dtype))
        cs.append(ctx.to(dtype))
    return torch.cat(zs), torch.cat(cs)


class _Profiler:
    """torch.profiler over ``profile_steps`` steps after 5 warm-up steps; writes out/profile.txt."""

    def __init__(self, cfg: PretrainConfig, out: Path):
        self.first, self.last, self.out, self.prof = 5, 5 + cfg.profile_steps, out, None

    def step(self, step: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        if step == self.first:
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=acts)
            self.prof.__enter__()
        elif step == self.last and self.prof is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            table = self.prof.key_averages().table(sort_by=key, row_limit=40)
            (self.out / "profile.txt").write_text(f"{self.last - self.first} steps\n{table}\n")
            self.prof = None


def _check_finite(loss: torch.Tensor, step: int, stage: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at step {step} of stage {stage}; the checkpoints "
                                 "kept are from before it (resume from them with a lower --lr)")


def _learning_rate(cfg: PretrainConfig, step: int, elapsed: float) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    frac = step / cfg.max_steps
    if cfg.max_minutes:
        frac = max(frac, elapsed / (60 * cfg.max_minutes))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def run(cfg: PretrainConfig) -> dict:
    """Train one stage; returns the final metrics (also written to ``out/metrics.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.training_utils import EMAModel

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    reset_accelerate_state()  # an earlier run in this process may have set another precision
    acc = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision), log_with="tensorboard",
                      project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    set_seed(cfg.seed)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, loss_fn, helpers = _build(cfg, acc.device)
    # fused AdamW: one kernel for all ~500 tensors on CUDA (the foreach default takes ~9 ms a step)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=acc.device.type == "cuda")
    model, opt = acc.prepare(model, opt)
    if cfg.compile:  # in place, so state-dict keys and checkpoints are unchanged
        acc.unwrap_model(model).compile()
    progress = _Progress()
    acc.register_for_checkpointing(progress)
    ema = None
    if cfg.stage == "unet" and cfg.ema_decay > 0:
        ema = EMAModel(acc.unwrap_model(model).parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75,
                       foreach=True)  # one fused update instead of ~500 small kernels a step
        ema.to(acc.device)
        acc.register_for_checkpointing(ema)
    if cfg.resume and checkpoints(out):
        last = checkpoints(out)[-1]
        acc.load_state(str(last))
        log.info("resumed from %s at step %d", last, progress.step)
    acc.init_trackers(f"pretrain-{cfg.stage}", config={k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})

    if helpers.get("pool") is not None:
        loader = itertools.repeat(None)  # batches come from the pool inside loss_fn
    else:
        loader = scene_loader("train", cfg.batch_size, cfg.seed, start_batch=progress.step, workers=cfg.workers)
    profiler = _Profiler(cfg, out) if cfg.profile_steps else None
    start = time.time()
    bar = tqdm(total=cfg.max_steps, initial=progress.step, desc=f"pretrain {cfg.stage}", disable=not acc.is_main_process)
    model.train()
    for scenes in loader:
        if progress.step >= cfg.max_steps or (cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes):
            break
        with acc.autocast():
            loss, extra = loss_fn(scenes)
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr = _learning_rate(cfg, progress.step, time.time() - start)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(acc.unwrap_model(model).parameters())
        progress.step += 1
        bar.update(1)
        if profiler is not None:
            profiler.step(progress.step)
        # finiteness is checked where the loss is read anyway (logging, checkpoints), not every
        # step: a per-step check is a device sync on the hot path
        if progress.step % cfg.log_every == 0 or progress.step == 1 or progress.step % cfg.checkpoint_every == 0:
            _check_finite(loss, progress.step, cfg.stage)
        if progress.step % cfg.log_every == 0 or progress.step == 1:
            scalars = {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr,
                       **{k: float(v.detach()) for k, v in extra.items()}}
            acc.log(scalars, step=progress.step)
            bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "exact_match", "mse")})
        if progress.step % cfg.checkpoint_every == 0:
            save_checkpoint(acc, out, progress.step, cfg.keep_checkpoints)
        if cfg.sample_every and progress.step % cfg.sample_every == 0 and cfg.stage != "judge":
            _sample_grid(cfg, acc, model, ema, helpers, out / "samples" / f"step-{progress.step:07d}.png")
    bar.close()
    elapsed = time.time() - start
    save_checkpoint(acc, out, progress.step, cfg.keep_checkpoints)
    final = acc.unwrap_model(model)
    if ema is not None:
        ema.copy_to(final.parameters())
    final.eval()
    metrics = {"stage": cfg.stage, "steps": progress.step, "seconds": round(elapsed, 1),
               "images_per_second": round(progress.step * cfg.batch_size / max(elapsed, 1e-9), 1)}
    if acc.is_main_process:
        metrics.update(_finish(cfg, final, helpers, out, acc.device))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    acc.end_training()
    return metrics


@torch.no_grad()
def _sample_grid(cfg, acc, model, ema, helpers, path: Path) -> None:
    from scdpo.utils.grid import save_grid

    unet = acc.unwrap_model(model)
    if cfg.stage == "vae":
        from scdpo.world.suites import suite_scenes

        scenes = suite_scenes("eval-mixed", 16, seed=1)
        x = render_scenes(scenes, unet.config.sample_size, acc.device) * 2 - 1
        rec = unet.decode(unet.encode(x).latent_dist.mean).sample.float()
        imgs = torch.cat([(x + 1) / 2, (rec.clamp(-1, 1) + 1) / 2]).cpu()
        save_grid(imgs, path, captions=[s.caption for s in scenes] * 2, columns=8)
        return
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    unet.eval()
    imgs = _generate(unet, helpers, cfg.sample_prompts, steps=20)
    unet.train()
    if ema is not None:
        ema.restore(unet.parameters())
    save_grid(imgs, path, captions=cfg.sample_prompts, columns=4)


def _generate(unet, helpers, prompts: list[str], steps: int = 20, guidance: float = 5.0, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] from the diffusers pipeline assembled around ``unet``."""
    from scdpo.world import basemodel as bm

    pipe = bm.assemble_pipeline(helpers["vae"], unet, helpers["tokenizer"], helpers["text_encoder"])
    pipe.set_progress_bar_config(disable=True)
    dtype = next(unet.parameters()).dtype
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    latents = torch.stack([torch.randn(unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                                       generator=g) for g in gens]).to(unet.device, dtype)
    with torch.autocast(unet.device.type, dtype=torch.bfloat16, enabled=unet.device.type == "cuda"):
        out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, latents=latents, output_type="pt")
    return out.images.float().cpu()


def _finish(cfg, model, helpers, out: Path, device) -> dict:
    """Save the trained part and measure it on held-out renders."""
    from scdpo.world.suites import suite_scenes

    n = cfg.heldout_per_suite
    held = suite_scenes("eval-clean", n, seed=99) + suite_scenes("eval-mixed", n, seed=99)
    size = _arch(cfg).image_size
    metrics = {}
    with torch.no_grad():
        if cfg.stage == "vae":
            # latents are scaled to unit variance, as SD's 0.18215 does for its VAE
            x = render_scenes(held, size, device) * 2 - 1
            z = model.encode(x).latent_dist.mean
            model.register_to_config(scaling_factor=float(1 / z.float().std()))
            rec = model.decode(z).sample.float().clamp(-1, 1)
            metrics["psnr_db"] = round(float(10 * torch.log10(4 / F.mse_loss(rec, x))), 2)
            metrics["scaling_factor"] = model.config.scaling_factor
            model.save_pretrained(out / "vae")
        elif cfg.stage == "judge":
            model.save_pretrained(out / "judge")
            x = render_scenes(held, size, device)
            y = label_matrix(held).to(device) > 0.5
            p = model(x.float()) > 0
            metrics["exact_match_renders"] = round(float((p == y).all(1).float().mean()), 4)
            metrics["label_accuracy_renders"] = round(float((p == y).float().mean()), 6)
            # false positives on concept-free images of a seed training never drew
            from scdpo.world.blobs import KINDS, concept_free

            gen = torch.Generator().manual_seed(12345)
            for kind in KINDS:
                free = concept_free(kind, len(x), size, gen, x.cpu() if kind == "smear" else None).to(device)
                metrics[f"false_positive_{kind}"] = round(float((model(free.float()) > 0).any(1).float().mean()), 4)
            if cfg.vae:
                vae = _load_vae(cfg.vae, device)
                rec = (vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample.float().clamp(-1, 1) + 1) / 2
                pr = model(rec) > 0
                metrics["exact_match_vae_reconstructions"] = round(float((pr == y).all(1).float().mean()), 4)
        else:
            from scdpo.world import basemodel as bm

            pipe = bm.assemble_pipeline(helpers["vae"], model, helpers["tokenizer"], helpers["text_encoder"])
            pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return metrics
