#!/usr/bin/env python3
"""Issue 16, part 2: how many EmojiWorld images a second `scdpo eval` and `scdpo data build` get out
of one process, today's settings side by side with the levers. Both commands spend their time in
the same three places, which each row times separately: the guided sampler (`T2IModel.sample`:
text encoding, DPM-Solver++ steps, VAE decoding, images to the CPU), the judge's scoring (the
reward and every EmojiWorld metric read its probabilities) and PNG encoding (images on disk).

Rows (``--rows``; each ``NAME:key=value,...``): ``dtype`` (fp32, bf16, fp16: the UNet and text
encoder; the VAE follows unless its config asks for fp32), ``batch`` (images per UNet batch: the
sampler's --batch-size), ``vae`` (images per decoder call), ``tf32`` (1: TF32 matmuls; convolutions
already use TF32 by default in torch), ``compile`` (1: ``SamplerConfig.compile``: the whole UNet and VAE
decoder since the forty-third round, their blocks before),
``graphs`` (1: the denoising loop's UNet calls replayed from CUDA graphs, ``SamplerConfig.cuda_graphs``),
``png`` (threads that PNG-encode: 1, today's one image at a time; N > 1, ``png_bytes_many`` on N
threads; 0, its default: ``--threads``), ``cl`` (1: the UNet and VAE in channels-last memory while sampling,
``SamplerConfig.channels_last``).
With ``--kernels N`` each row samples its first batch once more under torch.profiler: the device's busy share of
that call's wall time, the kernels' time by kind (convolution, GEMM, normalisation, attention, elementwise,
copies and layout changes, other) and the N longest kernels, to OUT/kernels-ROW.txt (what bounds the sampler:
launches, a kind of kernel, or arithmetic).
The first row is today's `scdpo eval` / `scdpo data build` (fp32, 64 images a batch, 8 a decoder
call). Each row runs the workload twice: "cold" includes one-off costs (cuDNN's algorithm search,
compilation), "warm" is the pace a long run keeps.

Equal outputs: every row samples the same prompts with the same per-image seeds, so each is checked
against the first row: the largest and mean absolute pixel difference, and the share of images on
which the judge's thresholded verdicts (every concept, present or not) are all the same, and on
which its harmful verdict (any harmful concept present) is. Batch size alone changes nothing but
kernel choice; dtypes change the arithmetic, and these columns say by how much.

    python benchmarks/emojiworld_throughput.py --device cuda --out $OUT/tp          # one H200, ~3 min
With ``--eval``, the whole `scdpo eval` (its 4 default suites, 1,610 images: sampling, PNGs, the
judge's metrics, the Frechet distance to the renders, report) also runs four times in this process:
with today's settings (64 images a batch, 8 a decoder call, PNGs one at a time, the Frechet distance
in numpy, one suite after another, no cache of the references' features), with the defaults without the
overlap (`--no-overlap`: the default on a GPU since the twenty-sixth round) first with an empty cache of the
references' features (a first evaluation) and then reading it (every later one), and with the overlap
(`--overlap`: the default on the CPU) reading it; each row gives its wall time, images/s, and the largest difference of any suite's harmful
rate and alignment from the first (``--eval-limit N --steps S`` on the CPU: the demo's evaluation).

With ``--build COST_DIR``, the whole `scdpo data build` (``--build-prompts`` align-harmful and as many
align-clean prompts, 4 candidates and the safe prompt's image, as the rounds build) runs four times:
today's settings (64 a batch, 8 a decoder call, PNGs one at a time, 64-prompt chunks, one thing at a time),
the defaults with the chunk of before (``--chunk-size 64``), the defaults without the overlap
(``--no-overlap``: each chunk's PNGs and files before the next chunk samples, as until 2026-12-06), and the
defaults (the chunk picked by device and image size: 256 prompts on a GPU since the twenty-seventh round;
a chunk written on a worker thread while the next samples, since 2026-12-06); each row gives its wall time, images/s, pairs and the share of prompts whose choice
(status, winner, loser) is the first row's.

``--dtypes bf16 ...`` adds a row to each of them per precision: the defaults with `--dtype` (the commands'
precision since 2026-12-05; "auto" is TF32 for EmojiWorld on a CUDA GPU since 2026-12-06, fp32 before, and
today's rows pin fp32). ``--graphs`` adds one eval row: the defaults with the sampler's CUDA graphs
(``scdpo eval --cuda-graphs``), whose one replay a UNet call leaves the sampling thread fewer launches to make
while the eval's worker holds the interpreter. ``--fill`` adds two more: the defaults with `scdpo eval
--fill-batches` (every suite's images in the sampler's full batches, across suites), then the defaults again
(the pair's noise, side by side).

    python benchmarks/emojiworld_throughput.py --device cpu --images 16 --steps 2 \\
        --rows today b16:batch=16,vae=16 --out /tmp/tp                               # CPU dry run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import torch

from scdpo.models.speed import tf32_restored  # each row's TF32 switch put back after it: the rows after must
# not inherit a row's ``--dtype tf32`` (SamplerConfig.dtype sets it for the process)

from gpu_common import sync  # noqa: E402 (benchmarks/ is on sys.path)
from scdpo.models.t2i import TORCH_DTYPES as DTYPES  # the commands' --dtype names

SUITES = ("eval-clean", "eval-harmful-explicit")
DEFAULT_ROWS = ("today:dtype=fp32,batch=64,vae=8", "b256:dtype=fp32,batch=256,vae=256",
                "b1024:dtype=fp32,batch=1024,vae=1024", "b1024-tf32:dtype=fp32,batch=1024,vae=1024,tf32=1",
                "b1024-bf16:dtype=bf16,batch=1024,vae=1024",
                "b1024-bf16-compile:dtype=bf16,batch=1024,vae=1024,compile=1",
                "b1024-png:dtype=fp32,batch=1024,vae=1024,png=8")
KEYS = {"dtype": "fp32", "batch": "64", "vae": "8", "tf32": "0", "compile": "0", "png": "1", "graphs": "0", "cl": "0"}


def parse_row(spec: str) -> dict:
    """``NAME:key=value,...`` -> {"name", "dtype", "batch", "vae", "tf32", "compile"}; "today" alone is
    today's defaults."""
    name, _, rest = spec.partition(":")
    row = dict(KEYS)
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in KEYS:
            raise SystemExit(f"--rows {spec!r}: {item!r} is not key=value with a key of {', '.join(KEYS)}")
        row[key] = value
    if row["dtype"] not in DTYPES:
        raise SystemExit(f"--rows {spec!r}: dtype must be one of {', '.join(DTYPES)}")
    return {"name": name, "dtype": row["dtype"], "batch": int(row["batch"]), "vae": int(row["vae"]),
            "tf32": row["tf32"] == "1", "compile": row["compile"] == "1", "png": int(row["png"]),
            "graphs": row["graphs"] == "1", "cl": row["cl"] == "1"}


def workload(n: int) -> tuple[list[str], list[int]]:
    """``n`` prompts, half clean and half explicitly harmful (draw 0, repeated with new seeds when
    ``n`` passes a suite's size), and one seed each, as `scdpo eval` derives them."""
    from scdpo.prompts.records import load_records

    prompts, seeds = [], []
    for s, suite in enumerate(SUITES):
        records = load_records(suite, None)
        for i in range(n // len(SUITES) + (s < n % len(SUITES))):
            prompts.append(records[i % len(records)].prompt)
            seeds.append(zlib.crc32(f"{suite}\0{i % len(records)}\0{i // len(records)}".encode()))
    return prompts, seeds


def run_row(row: dict, prompts: list[str], seeds: list[int], steps: int, device: torch.device,
            judge, kernels: tuple[int, Path] | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One row: load the model in the row's dtype, then the workload twice; the warm pass's images
    and judge probabilities are returned for the comparison with the first row. ``kernels``: (N, folder)
    of ``--kernels``, the row's first batch profiled once more after them (:func:`kernel_profile`)."""
    from scdpo.models.sampler_config import SamplerConfig
    from scdpo.models.t2i import T2IModel
    from scdpo.world.dataset import png_bytes, png_bytes_many

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = row["tf32"]
        torch.cuda.reset_peak_memory_stats()
    model = T2IModel.from_pretrained("emojiworld", device=device, dtype=DTYPES[row["dtype"]])
    sampler = SamplerConfig(steps=steps, batch_size=row["batch"], vae_batch_size=row["vae"], progress=False,
                            compile=row["compile"], cuda_graphs=row["graphs"], channels_last=row["cl"])
    out = {**row, "images": len(prompts), "steps": steps}
    for phase in ("cold", "warm"):
        model.clear_prompt_cache()  # the warm pass encodes its prompts again, as a new run would
        sync(device)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # a graphed row that fell back must say so
            warnings.simplefilter("always")
            images = model.sample(prompts, seeds, sampler)
        if any("CUDA graphs" in str(w.message) for w in caught):
            out["graphs_fell_back"] = True
        sync(device)
        t1 = time.perf_counter()
        probs = judge.probabilities(images)
        t2 = time.perf_counter()
        if phase == "warm":
            [png_bytes(x) for x in images] if row["png"] == 1 else png_bytes_many(images, row["png"] or None)
        t3 = time.perf_counter()
        out[f"{phase}_sample_s"], out[f"{phase}_judge_s"] = round(t1 - t0, 3), round(t2 - t1, 3)
    out["png_s"] = round(t3 - t2, 3)
    n = len(prompts)
    out["sample_img_s"] = round(n / out["warm_sample_s"], 1)
    out["judge_img_s"] = round(n / out["warm_judge_s"], 1)
    out["end_to_end_img_s"] = round(n / (out["warm_sample_s"] + out["warm_judge_s"] + out["png_s"]), 1)
    out["cold_extra_s"] = round(out["cold_sample_s"] - out["warm_sample_s"], 1)
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if kernels is not None:
        n = min(len(prompts), row["batch"])
        out.update(kernel_profile(lambda: model.sample(prompts[:n], seeds[:n], sampler), device, kernels[0],
                                  kernels[1] / f"kernels-{row['name']}.txt"))
    del model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's default, for the rows and --eval after
        torch.cuda.empty_cache()
    return out, images, probs


#: kernel kinds by name (first match wins), for --kernels: cuDNN's and CUTLASS's convolution kernels name
#: their layout or "conv"/"fprop"/"dgrad"; GEMMs "gemm"; the rest by what they compute
KERNEL_KINDS = (("convolution", ("conv", "fprop", "implicit_convolve", "winograd", "xmma_fprop")),
                ("layout/copy", ("nchwtonhwc", "nhwctonchw", "copy", "memcpy", "memset", "transpose", "cat")),
                # GroupNorm's statistics run in RowwiseMomentsCUDAKernel ("other" in the thirty-eighth round's table)
                ("normalisation", ("group_norm", "groupnorm", "layer_norm", "layernorm", "welford", "batch_norm",
                                   "moments")),
                ("attention", ("fmha", "flash", "attention", "softmax", "sdpa")),
                ("gemm", ("gemm", "cutlass", "matmul", "sm80_", "sm90_")),
                ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "silu", "add", "mul")))


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def kernel_profile(fn, device: torch.device, top: int, path: Path) -> dict:
    """``fn()`` once under torch.profiler: the device kernels' total time against the call's wall time (the
    busy share: well below 1, the GPU waits on the host), their time by :func:`kernel_kind`, and the ``top``
    longest kernels, written to ``path``; returns the summary for the row."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[kernel_kind(e.key)] = by_kind.get(kernel_kind(e.key), 0.0) + e.self_device_time_total / 1e6
    busy = sum(by_kind.values())
    kinds = sorted(by_kind.items(), key=lambda kv: -kv[1])
    lines = [f"wall {wall:.3f} s, kernels {busy:.3f} s (busy {busy / wall:.0%})",
             "by kind: " + ", ".join(f"{k} {v:.3f} s ({v / max(busy, 1e-9):.0%})" for k, v in kinds), "", prof.key_averages().table(sort_by="self_cuda_time_total" if kernels else "self_cpu_time_total",
                                           row_limit=top, max_name_column_width=90)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"kernel_wall_s": round(wall, 3), "kernel_busy": round(busy / wall, 3),
            "kernel_s": {k: round(v, 3) for k, v in kinds}}


def agreement(images, probs, ref_images, ref_probs, threshold: float, harmful: list[int]) -> dict:
    """How far a row's images and judge verdicts are from the first row's (same prompts and seeds)."""
    diff = (images - ref_images).abs()
    verdict, ref_verdict = probs > threshold, ref_probs > threshold
    return {"max_abs_diff": round(float(diff.max()), 4), "mean_abs_diff": round(float(diff.mean()), 5),
            "verdicts_equal": round(float((verdict == ref_verdict).all(1).float().mean()), 4),
            "harmful_equal": round(float((verdict[:, harmful].any(1) == ref_verdict[:, harmful].any(1)).float().mean()), 4)}


def timed(fn, cfg, device: torch.device, profile: Path | None = None):
    """``(fn(cfg), wall seconds)``, the device synchronised on both sides; with ``profile`` the call runs under
    cProfile (its main thread) and ``profile`` gets its functions by cumulative and by own time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile() if profile else None
    sync(device)
    t0 = time.perf_counter()
    result = prof.runcall(fn, cfg) if prof else fn(cfg)
    sync(device)
    seconds = time.perf_counter() - t0
    if prof:
        text = io.StringIO()
        for key in ("cumulative", "tottime"):
            pstats.Stats(prof, stream=text).sort_stats(key).print_stats(45)
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(text.getvalue())
    return result, seconds


def warm_up(fn, device: torch.device) -> None:
    """One small untimed run before the rows (2026-12-06 on): the first row, today's, no longer pays the
    process's first CUDA calls, cuDNN's first choices and the lazy imports alone (its wall time moved 20% between
    two runs of the thirty-eighth round, 23.6 and 28.3 s). TF32's switch is restored after it."""
    with tf32_restored(), contextlib.redirect_stdout(io.StringIO()):
        fn()
    sync(device)


@contextlib.contextmanager
def todays_pngs():
    """Today's PNGs for a row: one image at a time, at Pillow's default zlib level 6, the suites' grids too (the
    commands' level is ``scdpo.utils.io.PNG_LEVEL``, 1 since 2026-12-06)."""
    from unittest import mock

    import scdpo.utils.grid as grid
    import scdpo.world.dataset as dataset

    encode = dataset.png_bytes_many
    with mock.patch.object(dataset, "png_bytes_many", lambda images, threads=None: encode(images, 1, level=6)), \
            mock.patch.object(grid, "PNG_LEVEL", 6):
        yield


def eigh_frechet(a, b, device=None) -> float:
    """Today's Frechet algebra (the eval's until 2026-12-06): ``Tr((R S_b R)^(1/2))`` with ``R = S_a^(1/2)``, two
    D x D eigendecompositions in numpy; the eval's now is ``scdpo.eval.frechet.frechet_distance``'s nuclear norm."""
    import numpy as np

    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64) for x in (a, b))
    ca, cb = (np.atleast_2d(np.cov(x, rowvar=False)) for x in (a, b))
    w, v = np.linalg.eigh((ca + ca.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cb @ root), 0, None)).sum()
    return max(float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross), 0.0)


def eval_rows(device: torch.device, steps: int, limit: int | None, out: Path, profile: bool = False,
              dtypes: tuple[str, ...] = (), graphs: bool = False, fill: bool = False) -> list[dict]:
    """`scdpo eval` end to end, today's settings (the issue's yardstick, the eval before the twenty-fourth
    round: 64 images a batch, 8 a decoder call, PNGs one at a time, the Frechet distance in numpy, no
    overlap) against the defaults without and with the overlap (the module's docstring). With
    ``profile`` every row but today's runs under cProfile (its main thread): ``out/profile-ROW.txt`` lists the
    functions by cumulative and by own time (where the seconds beside sampling go). ``dtypes``: one more
    row each, the defaults with the overlap and `--dtype` of that precision; ``graphs``: one more, the defaults
    with the sampler's CUDA graphs (`scdpo eval --cuda-graphs`); ``fill``: two more, the defaults with
    `--fill-batches`, then the defaults again."""
    import os
    import shutil
    from unittest import mock

    import scdpo.eval.frechet as frechet
    from scdpo.eval.config import EvalConfig
    from scdpo.eval.run import run
    from scdpo.models.sampler_config import SamplerConfig

    rows, first = [], None
    # today's precision pinned: "auto" is tf32 for EmojiWorld on a CUDA GPU since 2026-12-06, fp32 before
    today = SamplerConfig(steps=steps, batch_size=64, vae_batch_size=8, progress=False, dtype="fp32")
    defaults = SamplerConfig(steps=steps, progress=False)
    # the references' cache starts empty in this run's folder: the first defaults row fills it (a first
    # evaluation), the later ones read it (every later evaluation of the same suites); today's has none
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    warm_up(lambda: run(EvalConfig(model="emojiworld", out=str(out / "warm-up"), limit=4, device=str(device),
                                   sampler=today, overlap=False, frechet_cache=False, cuda_graphs=False,
                                   fill_batches=False)), device)
    # the sampler's CUDA graphs: None is the eval's default (off), today's row pins them off as they were
    for name, sampler, png, overlap, cuda_graphs in [
            ("scdpo eval, today", today, True, False, False),
            ("scdpo eval, defaults without overlap, cache empty", defaults, False, False, None),
            ("scdpo eval, defaults without overlap, cache read", defaults, False, False, None),
            ("scdpo eval, defaults with overlap, cache read", defaults, False, True, None),
            *((f"scdpo eval, defaults with overlap, dtype {d}", replace(defaults, dtype=d), False, True, None)
              for d in dtypes),
            *([("scdpo eval, defaults with overlap, cuda graphs", defaults, False, True, True)] if graphs else []),
            *([("scdpo eval, defaults with overlap, fill batches", defaults, False, True, None),
               ("scdpo eval, defaults with overlap, cache read, again", defaults, False, True, None)] if fill else [])]:
        cfg = EvalConfig(model="emojiworld", out=str(out / name.split(", ", 1)[1].replace(", ", "-").replace(" ", "-")),
                         limit=limit, device=str(device), sampler=sampler, overlap=overlap, frechet_cache=not png,
                         cuda_graphs=cuda_graphs, fill_batches=name.endswith("fill batches"))
        with (todays_pngs() if png else contextlib.nullcontext(),
              mock.patch.object(frechet, "frechet_distance", eigh_frechet) if png else contextlib.nullcontext(),
              mock.patch.dict(os.environ, {"SCDPO_CACHE": str(cache)}), tf32_restored()):
            m, seconds = timed(run, cfg, device, out / f"profile-{Path(cfg.out).name}.txt" if profile and not png else None)
        n = sum(s["prompts"] for s in m["suites"].values())  # one image a prompt
        rates = {(k, key): s.get(key) for k, s in m["suites"].items() for key in ("harmful_rate", "alignment")}
        first = first or rates
        diff = max((abs(v - first[k]) for k, v in rates.items() if v is not None and first[k] is not None), default=0.0)
        rows.append({"name": name, "images": n, "seconds": round(seconds, 1), "img_s": round(n / seconds, 1),
                     "max_rate_diff": round(diff, 4), "dtype": m.get("dtype"),
                     "fill_batches": m.get("config", {}).get("fill_batches"),
                     **{k: m[k] for k in ("seconds_by_phase", "worker_seconds_by_phase") if k in m}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def build_rows(device: torch.device, steps: int, n: int, cost_model: str, out: Path,
               dtypes: tuple[str, ...] = (), profile: bool = False) -> list[dict]:
    """`scdpo data build` end to end (``n`` align-harmful and ``n`` align-clean prompts, 4 candidates,
    the safe prompt's image too: the rounds' build) with today's settings (64 images a batch, 8 a decoder
    call, PNGs one at a time, 64 prompts a chunk, one thing at a time), the defaults with ``--chunk-size 64`` (the
    chunk of before), the defaults with ``--no-overlap`` (each chunk's PNGs and files written before the next
    samples, as until 2026-12-06) and the defaults (on a GPU 256 prompts a chunk: 1,024 candidates a batch). Each row: wall time, candidate images/s, pairs, and the share of prompts whose choice
    (status, winner, loser) is the first row's; every row starts from an empty folder. ``dtypes``: one more
    row each, the defaults with `--dtype` of that precision. ``profile``: as for :func:`eval_rows`."""
    import shutil

    import pandas as pd

    from scdpo.data.builder import build
    from scdpo.data.config import BuildConfig
    from scdpo.models.sampler_config import SamplerConfig

    rows, first = [], None

    def config(folder: Path, batch, chunk, dtype, overlap, n=n) -> BuildConfig:
        return BuildConfig(model="emojiworld", cost_model=cost_model, reward="emojiworld", out=str(folder),
                           harmful="align-harmful", clean="align-clean", n_harmful=n, n_clean=n, candidates=4,
                           safe_prompt_winner=True, batch_size=batch, chunk_size=chunk, device=str(device),
                           overlap=overlap, sampler=SamplerConfig(steps=steps, progress=False, dtype=dtype))
    shutil.rmtree(out / "warm-up", ignore_errors=True)
    warm_up(lambda: build(config(out / "warm-up", 64, 64, "fp32", False, n=4)), device)
    # today's precision pinned: "auto" is tf32 for EmojiWorld on a CUDA GPU since 2026-12-06, fp32 before
    for name, batch, chunk, png, dtype, overlap in [
            ("scdpo data build, today", 64, 64, True, "fp32", False),
            ("scdpo data build, --chunk-size 64", None, 64, False, "auto", None),
            ("scdpo data build, --no-overlap", None, None, False, "auto", False),
            ("scdpo data build, defaults", None, None, False, "auto", None),
            *((f"scdpo data build, --dtype {d}", None, None, False, d, None) for d in dtypes)]:
        folder = out / name.split(", ")[1].strip("-").replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        cfg = config(folder, batch, chunk, dtype, overlap)
        with todays_pngs() if png else contextlib.nullcontext(), tf32_restored():
            summary, seconds = timed(build, cfg, device, out / f"profile-{folder.name}.txt" if profile and not png else None)
        table = pd.read_parquet(folder / "choices.parquet")
        choices = table.set_index("prompt_id")[["status", "winner", "loser"]]
        first = choices if first is None else first
        same = float((choices.reindex(first.index) == first).all(axis=1).mean())
        images = int(table["seeds"].map(len).sum())
        rows.append({"name": name, "images": images, "seconds": round(seconds, 1), "img_s": round(images / seconds, 1),
                     "pairs": summary["pairs"], "same_choice": round(same, 4),
                     **json.loads((folder / "seconds.json").read_text())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ["row", "sample img/s (warm)", "x today", "judge img/s", "end to end img/s", "x today", "cold extra s",
            "peak GB", "max / mean abs diff", "verdicts equal", "harmful verdict equal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in [
            r["name"], r["sample_img_s"], f"{r['sample_img_s'] / base['sample_img_s']:.2f}x", r["judge_img_s"],
            r["end_to_end_img_s"], f"{r['end_to_end_img_s'] / base['end_to_end_img_s']:.2f}x", r["cold_extra_s"],
            r.get("peak_gb", ""), f"{r['max_abs_diff']} / {r['mean_abs_diff']}", f"{100 * r['verdicts_equal']:.1f}%",
            f"{100 * r['harmful_equal']:.1f}%"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=2048, help="images a pass (half clean, half explicit harmful)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (scdpo eval's and data build's default)")
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), help="NAME:key=value,... (the first is the yardstick)")
    p.add_argument("--threads", type=int, default=8,
                   help="CPU threads, as `scdpo --threads N` sets them (PNGs of --eval's defaults row; 8 in the "
                        "twenty-fourth round's measurement)")
    p.add_argument("--eval", action="store_true", help="also time the whole scdpo eval: today's settings, the defaults without the overlap (the references' cache empty, then read), with it")
    p.add_argument("--profile", action="store_true", help="the rows of --eval and --build but today's under cProfile -> OUT/eval/profile-ROW.txt, "
                        "OUT/build/profile-ROW.txt")
    p.add_argument("--eval-limit", type=int, default=None, help="prompts a suite in --eval (default: all)")
    p.add_argument("--build", metavar="COST_DIR", help="also time the whole scdpo data build with this cost model "
                   "(today's settings, the defaults with --chunk-size 64, the defaults)")
    p.add_argument("--dtypes", nargs="*", default=[], choices=("fp32", "bf16", "fp16", "tf32"),
                   help="with --eval / --build: one more row each, the defaults with `--dtype` of that precision "
                        "(tf32: fp32 weights, TF32 matmuls)")
    p.add_argument("--graphs", action="store_true",
                   help="with --eval: one more row, the defaults with the sampler's CUDA graphs")
    p.add_argument("--fill", action="store_true",
                   help="with --eval: two more rows, the defaults with --fill-batches, then the defaults again")
    p.add_argument("--build-prompts", type=int, default=500, help="harmful and clean prompts each in --build")
    p.add_argument("--kernels", type=int, default=0, metavar="N",
                   help="profile each row's first batch once more: busy share, kernel time by kind, the N longest "
                        "kernels (OUT/kernels-ROW.txt)")
    p.add_argument("--out", required=True, help="folder for rows.jsonl and table.md")
    args = p.parse_args(argv)
    from scdpo.utils.io import atomic_write_text
    from scdpo.world.judge import load_default_judge
    from scdpo.world.vocab import load_vocabulary

    from scdpo.utils.threads import set_threads

    set_threads(args.threads)
    rows_spec = [parse_row("today:" if r == "today" else r) for r in args.rows]
    out, device = Path(args.out), torch.device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    prompts, seeds = workload(args.images)
    judge = load_default_judge(device)
    harmful = [c.index for c in load_vocabulary().harmful]
    rows, ref = [], None
    for spec in rows_spec:
        try:
            row, images, probs = run_row(spec, prompts, seeds, args.steps, device, judge,
                                         (args.kernels, out) if args.kernels else None)
        except Exception as e:  # a lever that fails is a row that says so, not the end of the run
            print(f"{spec['name']}: FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            continue
        ref = ref or (images, probs)
        row.update(agreement(images, probs, *ref, float(judge.config.threshold), harmful))
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(out / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    text = table(rows) + "\n" if rows else ""
    if args.eval:
        ev = eval_rows(device, args.steps, args.eval_limit, out / "eval", args.profile, tuple(args.dtypes),
                       args.graphs, args.fill)
        atomic_write_text(out / "eval.jsonl", "".join(json.dumps(r) + "\n" for r in ev))
        text += ("\n| whole command | images | wall s | images/s | x today | largest rate difference |\n"
                 "|---|---|---|---|---|---|\n")
        text += "".join(f"| {r['name']} | {r['images']} | {r['seconds']} | {r['img_s']} | "
                        f"{r['img_s'] / ev[0]['img_s']:.2f}x | {r['max_rate_diff']} |\n" for r in ev)
    if args.build:
        bd = build_rows(device, args.steps, args.build_prompts, args.build, out / "build", tuple(args.dtypes),
                        args.profile)
        atomic_write_text(out / "build.jsonl", "".join(json.dumps(r) + "\n" for r in bd))
        text += ("\n| whole command | images sampled | wall s | images/s | x today | pairs | same choice |\n"
                 "|---|---|---|---|---|---|---|\n")
        text += "".join(f"| {r['name']} | {r['images']} | {r['seconds']} | {r['img_s']} | "
                        f"{r['img_s'] / bd[0]['img_s']:.2f}x | {r['pairs']} | {r['same_choice']:.1%} |\n" for r in bd)
    if text:
        atomic_write_text(out / "table.md", text)
        print(text)


if __name__ == "__main__":
    main()
