#!/usr/bin/env python3
"""Issue 16: what `--dtype` buys the sampling commands. Times the whole `scdpo generate` (model load,
text encoding, the denoising loop, VAE decoding, PNGs, the index) on an SD 1.5-shaped pipeline folder with
random weights (benchmarks/gpu_sampling.py's UNet, VAE and 12-layer CLIP text encoder, DDIM, guidance
7.5, 512 px; the VAE with diffusers' default force_upcast, which a VAE config that does not name it gets,
so it decodes in fp32 in every row) once per precision, the same prompts and per-image seeds in each, and gives each row's
images/s, its ratio to the first row's, and the largest and mean absolute pixel difference from the
first row's images (a bf16 row's rounding, which is what "equal outputs within bf16 tolerance" allows).

Before `--dtype` existed every command sampled in fp32 (the first row); "auto" is what they do now
(bf16 on a CUDA GPU for a real model). Each row runs twice and keeps the second (cuDNN's algorithm
search and the CUDA context belong to the first).

    python benchmarks/sampling_dtype.py --out $OUT/dtype                      # one GPU, ~3 min
    python benchmarks/sampling_dtype.py --tiny --device cpu --out /tmp/dtype   # CPU dry run, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gpu_common import sync  # noqa: E402 (benchmarks/ is on sys.path)


def pipeline_folder(out: Path, tiny: bool) -> Path:
    """The pipeline saved as a diffusers folder, as a user's checkpoint would be (made once)."""
    folder = out / ("tiny-sd" if tiny else "sd15-random")
    if (folder / "model_index.json").is_file():
        return folder
    if tiny:
        from scdpo.models.testing import tiny_sd_pipeline

        return tiny_sd_pipeline(folder)
    from gpu_sampling import sd15_pipeline

    pipe = sd15_pipeline(torch.device("cpu"), torch.float32)
    # diffusers' default for a VAE config that does not name force_upcast (SD 1.5's, as far as we know): True,
    # so T2IModel keeps that VAE in fp32 under bf16 (gpu_sampling.py's rows decode in bf16 instead)
    pipe.vae.register_to_config(force_upcast=True)
    pipe.save_pretrained(folder)
    return folder


def read_images(index: Path) -> torch.Tensor:
    """The images of a `scdpo generate` index.parquet, (N, 3, H, W) in [0, 1], in its order."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    pngs = pq.read_table(index, columns=["image"]).column("image").to_pylist()
    arrays = [np.asarray(Image.open(io.BytesIO(p["bytes"] if isinstance(p, dict) else p)).convert("RGB")) for p in pngs]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny SD pipeline (a CPU dry run)")
    p.add_argument("--images", type=int, default=128, help="prompts, one image each")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=64, help="images per UNet batch (the sampler's default on SD)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "auto", "fp16"], help="rows; the first is the yardstick")
    p.add_argument("--out", required=True, help="folder for the pipeline, the images, rows.jsonl and table.md")
    args = p.parse_args(argv)

    from scdpo.models.generate import GenerateConfig, run
    from scdpo.models.sampler_config import SamplerConfig, sampling_dtype

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = pipeline_folder(out, args.tiny)
    prompts = out / "prompts.txt"
    text = "thing {}" if args.tiny else "a photo of thing number {} on a table"
    prompts.write_text("".join(text.format(i) + "\n" for i in range(args.images)))
    device = torch.device(args.device)
    rows, first = [], None
    for dtype in args.dtypes:
        sampler = SamplerConfig(steps=args.steps, guidance_scale=7.5, scheduler="ddim", batch_size=args.batch_size,
                                progress=False, dtype=dtype)
        target = out / f"images-{dtype}"
        cfg = GenerateConfig(model=str(folder), out=str(target), prompts=str(prompts), device=str(device),
                             sampler=sampler, grid_size=16)
        for _ in range(2):  # the second pass is kept
            sync(device)
            t0 = time.perf_counter()
            run(cfg)
            sync(device)
            seconds = time.perf_counter() - t0
        images = read_images(target / "index.parquet")
        first = images if first is None else first
        diff = (images - first).abs()
        rows.append({"dtype": dtype, "resolved": sampling_dtype(dtype, str(folder), device), "images": len(images),
                     "seconds": round(seconds, 2), "img_s": round(len(images) / seconds, 2),
                     "max_diff": round(float(diff.max()), 4), "mean_diff": round(float(diff.mean()), 5),
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"})
        rows[-1]["x_first"] = round(rows[0]["seconds"] / seconds, 2)  # from the seconds, not the rounded rates
        print(json.dumps(rows[-1]), flush=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = "| --dtype | ran as | images/s | x first row | max / mean pixel diff from it |\n|---|---|---|---|---|\n"
    table = head + "".join(f"| {r['dtype']} | {r['resolved']} | {r['img_s']} | {r['x_first']}x | "
                           f"{r['max_diff']} / {r['mean_diff']} |\n" for r in rows)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
