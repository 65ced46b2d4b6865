#!/usr/bin/env python3
"""Issue 8, benchmark 2: scdpo's batched sampler (``T2IModel.sample``) against diffusers'
``StableDiffusionPipeline.__call__`` on the same SD 1.5-shaped pipeline with random weights
(UNet and AutoencoderKL of SD 1.5's configs, a 12-layer CLIP text encoder of SD 1.5's shape over
a character-level tokenizer): DDIM, 25 steps, guidance 7.5, 512 px, bf16, the same prompts and
per-image seeds.  Reports images/s (whole calls: text encoding, denoising, VAE decoding, images
on the CPU) and the largest and mean absolute difference of the images from the pipeline's.

Rows: the pipeline (and, as the yardstick of "equal within bf16 tolerance", its first 4 images
in fp32: a row matches when its images are within ``--tol`` of the pipeline's, or no further from
the fp32 images than 1.5x the bf16 pipeline is); scdpo's sampler with every lever off; then its levers added one at a time
(fused QKV, attention kernel, channels-last, one VAE call per batch, CUDA graphs of the loop's UNet
calls, regional torch.compile).
JSON lines go to ``--out`` as rows finish; a markdown table is printed last, also when the
``--budget-s`` wall-time budget runs out.

    python benchmarks/gpu_sampling.py --out $OUT/sampling.jsonl --budget-s 180     # one H200
    python benchmarks/gpu_sampling.py --tiny                                       # CPU, seconds
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from gpu_common import SD15_UNET, OutOfBudget, base_parser, cancel_stop, exit_now, hard_stop, sync  # noqa: E402 (benchmarks/ is on sys.path)

SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), sample_size=512, scaling_factor=0.18215,
                # diffusers' SD pipeline decodes in the pipeline's dtype whatever this says; T2IModel
                # keeps a force_upcast VAE in fp32 under bf16 (its row "fp32 VAE" measures that rule)
                force_upcast=False)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def sd15_pipeline(device: torch.device, dtype: torch.dtype):
    """An SD 1.5-shaped StableDiffusionPipeline with random weights and a DDIM scheduler."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from scdpo.models.testing import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(**SD15_VAE)
    with torch.device(device):  # 860M parameters: initialise where they will live
        unet = UNet2DConditionModel(**SD15_UNET)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device, dtype)


def tiny_pipeline(device: torch.device, dtype: torch.dtype, tmp: Path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from scdpo.models.testing import tiny_sd_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_pipeline(tmp / "sd"), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    pipe.vae.register_to_config(force_upcast=False)  # as SD15_VAE
    return pipe.to(device, dtype)


class Runner:
    def __init__(self, args, pipe, model, device):
        self.args, self.pipe, self.model, self.device = args, pipe, model, device
        self.rows, self.start = [], time.perf_counter()
        self.out = open(args.out, "a") if args.out else None
        self.reference: dict[int, torch.Tensor] = {}  # the pipeline's images by batch size
        self.yardstick: torch.Tensor | None = None  # the pipeline's first images computed in fp32
        self.floor: float | None = None  # how far the bf16 pipeline is from them

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def emit(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.out:
            self.out.write(json.dumps(row) + "\n")
            self.out.flush()
        return row

    def prompts(self, n: int) -> tuple[list[str], list[int]]:
        # the character-level test tokenizer: one token per character (77 here, 16 in --tiny)
        text = "thing {}" if self.args.tiny else "a photo of thing number {} on a table"
        return [text.format(i) for i in range(n)], list(range(1000, 1000 + n))

    def run_pipeline(self, n: int, steps: int) -> torch.Tensor:
        prompts, seeds = self.prompts(n)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        side = self.args.size
        out = self.pipe(prompts, height=side, width=side, num_inference_steps=steps,
                        guidance_scale=self.args.guidance, generator=gens, output_type="pt", return_dict=False)[0]
        return out.float().cpu()

    def run_pipeline_fp32(self, n: int, steps: int) -> torch.Tensor:
        """The pipeline in fp32 (bf16 -> fp32 -> bf16 gives back the same weights)."""
        dtype = self.pipe.unet.dtype
        self.pipe.to(torch.float32)
        try:
            return self.run_pipeline(n, steps)
        finally:
            self.pipe.to(dtype)

    def run_scdpo(self, n: int, steps: int, config) -> torch.Tensor:
        prompts, seeds = self.prompts(n)
        self.model.clear_prompt_cache()  # encode the prompts as the pipeline does, every call
        return self.model.sample(prompts, seeds, replace(config, steps=steps, batch_size=n))

    def row(self, name: str, impl: str, n: int, fn, need_s: float, after=None) -> dict:
        """Time ``fn(n, steps)`` after a two-step warm-up; ``after(row)`` adds to the row before it is written."""
        row = {"variant": name, "impl": impl, "images": n}
        if self.left() < need_s:
            row["status"] = f"skipped: {self.left():.0f} s of budget left, ~{need_s:.0f} s needed"
            return self.emit(row)
        try:
            t0 = time.perf_counter()
            fn(n, 2)  # warm-up: kernels, cuDNN autotuning, compilation
            sync(self.device)
            row["warmup_s"] = round(time.perf_counter() - t0, 2)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            images = fn(n, self.args.steps)
            sync(self.device)
            dt = time.perf_counter() - t0
            row.update(s=round(dt, 3), images_per_s=round(n / dt, 2), status="ok")
            if self.device.type == "cuda":
                row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            if impl == "diffusers":
                self.reference[n] = images
            elif impl == "fp32":  # the yardstick: bf16 rounding alone moves the pipeline this far
                self.yardstick = images
                big = max(self.reference)
                self.floor = row["bf16_pipeline_dev"] = round((self.reference[big][:n] - images).abs().max().item(), 5)
            elif n in self.reference:
                diff = (images - self.reference[n]).abs()
                row.update(max_abs_diff=round(diff.max().item(), 5), mean_abs_diff=round(diff.mean().item(), 6))
                row["match"] = row["max_abs_diff"] <= self.args.tol
                if self.yardstick is not None:  # or no further from fp32 than the bf16 pipeline is
                    k = min(len(self.yardstick), n)
                    row["fp32_dev"] = round((images[:k] - self.yardstick[:k]).abs().max().item(), 5)
                    row["match"] = row["match"] or row["fp32_dev"] <= 1.5 * self.floor + 1e-3
        except OutOfBudget:
            raise
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
        except Exception as exc:  # a lever that fails on this stack is a result, not the end of the run
            row["status"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if after is not None:
            after(row)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self.emit(row)


def run(runner: Runner, args) -> None:
    from scdpo.models.sampling import SamplerConfig

    big, small = args.batches[-1], args.batches[0]
    plain = SamplerConfig(steps=args.steps, guidance_scale=args.guidance, scheduler="ddim", height=args.size,
                          width=args.size, progress=False, fuse_qkv=False, attention="auto")
    # levers, added one at a time (each row keeps the previous row's levers)
    ladder = [("scdpo, levers off", plain), ("+ fused QKV", replace(plain, fuse_qkv=True))]
    for backend in args.attention:
        ladder.append((f"+ attention={backend}", replace(ladder[1][1], attention=backend)))
    est = 12 if runner.device.type == "cuda" else 3
    runner.row("diffusers pipeline", "diffusers", big, runner.run_pipeline, est)
    if runner.pipe.unet.dtype != torch.float32 and big in runner.reference:
        runner.row("diffusers pipeline in fp32 (yardstick)", "fp32", min(4, big), runner.run_pipeline_fp32, est / 2)
    if args.only_best:  # the twenty-seventh round's best eager row (and the commands' defaults), then compile rows
        bases = {"best": (f"+ fused QKV, attention={args.attention[-1] if args.attention else 'auto'}, VAE batch = "
                          "images", replace(ladder[-1][1], vae_batch_size=big)),
                 "defaults": ("scdpo, the commands' defaults", plain)}
        variants = args.compile_variants if args.compile else []
        for base in ("best", "defaults"):
            if base == "best" or any(COMPILE_VARIANTS[v].get("base") == base for v in variants):
                label, cfg = bases[base]
                runner.row(label, "scdpo", big, lambda n, s, c=cfg: runner.run_scdpo(n, s, c), est)
        for variant in variants:
            compile_row(runner, *bases[COMPILE_VARIANTS[variant].get("base", "best")], variant, args.compile_mode, big,
                        est)
        return
    done = {}
    for name, cfg in ladder:
        done[name] = runner.row(name, "scdpo", big, lambda n, s, c=cfg: runner.run_scdpo(n, s, c), est)

    def best_so_far(graphs: bool = True):
        configs = dict(ladder + extra)
        ok = [(r["images_per_s"], i, name) for i, (name, r) in enumerate(done.items())
              if r.get("status") == "ok" and r.get("match", True) and (graphs or not configs[name].cuda_graphs)]
        name = max(ok)[2] if ok else ladder[0][0]
        return name, configs[name]
    extra = []
    name, cfg = best_so_far()
    # CUDA graphs of the loop's UNet calls (issue 16), recorded in every sample() call: their recording is in the row
    for label, change in (("channels-last", dict(channels_last=True)), ("VAE batch = images", dict(vae_batch_size=big)),
                          ("CUDA graphs", dict(cuda_graphs=True))):
        new = (f"{name} + {label}", replace(cfg, **change))
        extra.append(new)
        done[new[0]] = runner.row(new[0], "scdpo", big, lambda n, s, c=new[1]: runner.run_scdpo(n, s, c), est)
        name, cfg = best_so_far()
    def fp32_vae(n, s):
        vae = runner.model.vae
        vae.to(torch.float32)
        try:
            return runner.run_scdpo(n, s, cfg)
        finally:
            vae.to(dtype)
    dtype = runner.model.vae.dtype
    if dtype != torch.float32:
        runner.row(f"{name} + fp32 VAE (T2IModel's force_upcast rule)", "scdpo", big, fp32_vae, est)
    if small != big:
        runner.row("diffusers pipeline", "diffusers", small, runner.run_pipeline, est / 2)
        runner.row(f"{name} (best)", "scdpo", small, lambda n, s: runner.run_scdpo(n, s, cfg), est / 2)
    if args.compile:
        # on the best rows without the loop's graphs: compile's own graphs do not go inside one
        # (SamplerConfig refuses both), and the twenty-sixth and twenty-seventh rounds' rows had none
        name, cfg = best_so_far(graphs=False)
        for variant in args.compile_variants:
            compile_row(runner, name, cfg, variant, args.compile_mode, big, est)


#: inductor's options that diffusers' guide to faster SD inference sets before compiling ("Accelerate inference of
#: text-to-image diffusion models"): 1x1 convolutions as matmuls, a coordinate-descent search of each Triton
#: kernel's launch configuration (a longer compile), no epilogue fusion into matmul templates
INDUCTOR_FLAGS = dict(conv_1x1_as_mm=True, coordinate_descent_tuning=True, coordinate_descent_check_all_directions=True,
                      epilogue_fusion=False)


#: the compile rows (``--compile-variants``): what is compiled (``blocks``: each resnet and transformer block
#: in place, scdpo.models.speed.compile_blocks; ``whole``: ``SamplerConfig(compile=True)``, the sampler's own path,
#: which compiles the UNet's and the VAE decoder's whole forward since the forty-third round), of which modules
#: (the VAE too or not), channels-last weights or not, inductor's options or not, on which eager row (``base``:
#: the best one, or the commands' defaults: no fused QKV, torch's attention kernel, 8 images a decoder call) and
#: how many of a row's estimated seconds it needs (``need``; the options' tuning ran 887 s). "unet" and "blocks"
#: are the twenty-sixth and twenty-seventh rounds' two rows
COMPILE_VARIANTS = {
    "unet": dict(scope="blocks", vae=False),
    "blocks": dict(scope="blocks"),
    "blocks-cl": dict(scope="blocks", channels_last=True),
    "whole": dict(scope="whole"),
    "whole-cl": dict(scope="whole", channels_last=True),
    "whole-cl-flags": dict(scope="whole", channels_last=True, flags=INDUCTOR_FLAGS, need=80),
    "sampler": dict(scope="whole", base="defaults"),
    # the forty-fourth round's three levers, one at a time on the whole compile: an option of diffusers' guide
    # that cost no tuning time; autotuning (``max_autotune``: each matmul and convolution timed against Triton's
    # templates, the search of mode="max-autotune-no-cudagraphs" without that mode's coordinate-descent tuning,
    # which the whole-cl-flags row measured; the SD loop's CUDA graphs measured 0.90x, so none here); and
    # inductor's freezing (the weights folded in as constants, the convolutions' laid out once at compile time).
    # Freezing guards on the weights' identity, and the best row's fused QKV projections are new tensors each
    # call (speed.fused_qkv), so every call would compile again: it runs on the commands' defaults, which fuse
    # nothing. A frozen graph never sees a weight changed in place, so it is a measurement, not a sampler option
    "whole-1x1": dict(scope="whole", flags=dict(conv_1x1_as_mm=True)),
    "whole-autotune": dict(scope="whole", flags=dict(max_autotune=True), need=20),
    "sampler-freeze": dict(scope="whole", base="defaults", flags=dict(freezing=True)),
}


def uncompile(*modules) -> None:
    """Undo in-place ``Module.compile`` on ``modules`` and their children, and forget dynamo's graphs: the next
    compile row traces anew (inductor's and Triton's caches on disk stay: its warm-up may find kernels in them)."""
    import torch._dynamo

    for module in modules:
        for m in module.modules():
            m._compiled_call_impl = None
    torch._dynamo.reset()


def compile_row(runner: Runner, name: str, cfg, variant: str, mode: str | None, n: int, est: float) -> dict:
    """One compile row: ``cfg``'s sampler with ``variant`` (:data:`COMPILE_VARIANTS`) compiled from nothing (dynamo's
    graphs; inductor's and Triton's caches on disk stay, so a row after another may find kernels it shares), its
    warm-up (two steps) timed apart as in every row. ``mode`` is the blocks rows' torch.compile mode."""
    import contextlib

    import torch._dynamo
    import torch._inductor.config as inductor

    from scdpo.models import speed

    spec = COMPILE_VARIANTS[variant]
    unet, vae = runner.model.unet, runner.model.vae
    uncompile(unet, vae)
    need = spec.get("need", 4) * est
    label = f"{name} + compile {variant}" + (f" ({mode})" if mode and spec["scope"] == "blocks" else "")
    if spec["scope"] == "blocks" and runner.left() >= need:  # compiled lazily, at the row's first call
        for module in (unet, vae) if spec.get("vae", True) else (unet,):
            speed.compile_blocks(module, **({"mode": mode} if mode else {}))
    config = replace(cfg, channels_last=spec.get("channels_last", False), compile=spec["scope"] == "whole")
    torch._dynamo.utils.counters.clear()

    def after(row: dict) -> None:
        row["graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        if runner.left() < 0:  # inductor caught the budget's alarm inside a kernel's compile and went on
            row["status"] = f"{row.get('status')}; {-runner.left():.0f} s over the budget"
    with inductor.patch(spec["flags"]) if spec.get("flags") else contextlib.nullcontext():
        return runner.row(label, "scdpo", n, lambda k, s: runner.run_scdpo(k, s, config), need, after=after)


def table(runner: Runner) -> str:
    base = {r["images"]: r["images_per_s"] for r in runner.rows if r.get("impl") == "diffusers" and r.get("status") == "ok"}
    lines = ["| variant | images | images/s | x diffusers | peak GB | max abs diff | mean abs diff | vs fp32 | match "
             "| status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runner.rows:
        sp = (f"{r['images_per_s'] / base[r['images']]:.2f}" if r.get("impl") in ("scdpo", "diffusers")
              and "images_per_s" in r and r["images"] in base else "")
        lines.append(f"| {r['variant']} | {r['images']} | {r.get('images_per_s', '')} | {sp} | {r.get('peak_gb', '')} | "
                     f"{r.get('max_abs_diff', '')} | {r.get('mean_abs_diff', '')} | "
                     f"{r.get('fp32_dev', r.get('bf16_pipeline_dev', ''))} | {'' if 'match' not in r else r['match']} | "
                     f"{r.get('status', '')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = base_parser(__doc__, "the tiny test pipeline on the CPU (fp32): the code path in seconds", 180.0)
    p.add_argument("--batches", default=None, help="comma list of batch sizes, the largest gets the lever ladder "
                   "(default 16,64; --tiny 2,4)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of the blocks rows (e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--compile-variants", default="unet,blocks",
                   help=f"comma list of compile rows, each compiled from nothing: {', '.join(COMPILE_VARIANTS)}")
    p.add_argument("--only-best", action="store_true",
                   help="skip the lever ladder: the pipeline, its fp32 yardstick, then scdpo's best eager row of the "
                        "twenty-seventh round (fused QKV, cuDNN attention, one VAE call a batch) and the compile rows")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="leave cuDNN's algorithm search off, as scdpo's commands and diffusers' pipeline run by default "
                        "(every round before the forty-third's stage c searched)")
    p.add_argument("--tol", type=float, default=0.02, help="largest |image difference| (in [0, 1]) counted as a match")
    args = p.parse_args(argv)
    args.batches = sorted(int(b) for b in (args.batches or ("2,4" if args.tiny else "16,64")).split(","))
    args.attention = [a for a in args.attention.split(",") if a]
    args.compile_variants = [v for v in args.compile_variants.split(",") if v]
    unknown = sorted(set(args.compile_variants) - set(COMPILE_VARIANTS))
    if unknown:
        p.error(f"--compile-variants: unknown {', '.join(unknown)}; choose from {', '.join(COMPILE_VARIANTS)}")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision or ("fp32" if args.tiny else "bf16")]
    if device.type == "cuda":  # for every row, the pipeline's too; scdpo's commands leave torch's default (off)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark

    hard_stop(args.budget_s + 20)  # a little after the budget: the table is still printed
    import diffusers

    from scdpo.models.t2i import T2IModel

    diffusers.utils.logging.set_verbosity_error()
    info = {"torch": torch.__version__, "diffusers": diffusers.__version__, "cudnn_benchmark": args.cudnn_benchmark,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "budget_s": args.budget_s}
    print(json.dumps(info), flush=True)
    runner = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipe = tiny_pipeline(device, dtype, Path(tmp)) if args.tiny else sd15_pipeline(device, dtype)
            args.size = 32 if args.tiny else 512
            pipe.set_progress_bar_config(disable=True)
            model = T2IModel(pipe, device=device, dtype=dtype)  # the same modules
            runner = Runner(args, pipe, model, device)
            run(runner, args)
    except OutOfBudget:
        if runner is not None:
            runner.emit({"variant": "-", "images": 0, "status": "stopped: budget exhausted"})
    except Exception as exc:  # still print what finished
        import traceback

        traceback.print_exc()
        if runner is not None:
            runner.emit({"variant": "-", "images": 0,
                         "status": f"crashed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"})
    finally:
        cancel_stop()
    if runner is not None:
        print(f"\n## Sampling, {info['device']}, torch {info['torch']}, {args.steps} DDIM steps, guidance "
              f"{args.guidance}, {args.size} px, {time.perf_counter() - runner.start:.0f} s\n")
        print(table(runner), flush=True)
    return 0


if __name__ == "__main__":
    exit_now(main())
