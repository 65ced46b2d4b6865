"""Sampling batches picked by device and latent size, PNG encoding on threads, and the throughput
benchmark's rows (issue 16, part 2; docs/performance.md, "Sampling batches")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scdpo.models.sampler_config import SamplerConfig, auto_batch
from scdpo.world.dataset import png_bytes, png_bytes_many
from test_perf import load_script


def test_the_batch_is_picked_by_device_and_latent_size():
    auto = SamplerConfig()
    assert auto_batch(auto, "cpu", (16, 16)) == (64, 8)  # the CPU keeps today's batches
    assert auto_batch(auto, "cuda", (16, 16)) == (1024, 1024)  # EmojiWorld on a GPU: launch-bound at 64
    assert auto_batch(auto, "cuda", (32, 32)) == (64, 8)  # an SD VAE at 256 px: not the measured case
    assert auto_batch(auto, "cuda", (64, 64)) == (64, 8)  # SD 1.5 at 512 px fills the GPU at 64
    # what the user sets is kept, and a set batch decodes 8 at a time as before (earlier runs reproduce)
    assert auto_batch(SamplerConfig(batch_size=256), "cuda", (16, 16)) == (256, 8)
    assert auto_batch(SamplerConfig(batch_size=256, vae_batch_size=16), "cuda", (16, 16)) == (256, 16)
    assert auto_batch(SamplerConfig(batch_size=32), "cpu", (16, 16)) == (32, 8)
    with pytest.raises(ValueError, match="batch_size"):
        SamplerConfig(batch_size=0)


def test_a_small_gpu_gets_the_batch_that_fits():
    auto, gib = SamplerConfig(), 2**30
    assert auto_batch(auto, "cuda", (16, 16), free_bytes=120 * gib) == (1024, 1024)  # an H200: the measured batch
    assert auto_batch(auto, "cuda", (16, 16), free_bytes=4 * gib) == (128, 128)  # 128 x 9 MiB <= 2 GiB
    assert auto_batch(auto, "cuda", (16, 16), free_bytes=gib // 4) == (64, 64)  # never below today's 64
    assert auto_batch(SamplerConfig(batch_size=512), "cuda", (16, 16), free_bytes=gib) == (512, 8)  # set: kept
    assert auto_batch(auto, "cuda", (64, 64), free_bytes=gib) == (64, 8)


def test_the_sampler_samples_in_the_picked_batches(monkeypatch, tmp_path):
    """T2IModel.sample asks auto_batch with its device and latent size, and batches as it says
    (that images do not depend on the batch is tests/test_models.py's)."""
    from scdpo.models import sampling
    from scdpo.models.testing import tiny_sd_pipeline
    from scdpo.models.t2i import T2IModel

    asked, bars = [], []

    def picked(config, device_type, latent_hw, free_bytes=None):
        asked.append((config.batch_size, device_type, tuple(latent_hw), free_bytes))
        return 1, 1

    class Recorded(sampling.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(sampling, "auto_batch", picked)
    monkeypatch.setattr(sampling, "tqdm", Recorded)
    model = T2IModel.from_pretrained(tiny_sd_pipeline(tmp_path / "sd", text_encoder="clip"), device="cpu")
    model.sample(["a", "b", "c"], [0, 1, 2], SamplerConfig(steps=2))
    assert asked == [(None, "cpu", (model.resolution // model.vae_scale_factor,) * 2, None)]
    assert bars[0].total == 3 * 2  # 3 batches of one image, 2 steps each


def test_png_bytes_many_writes_the_bytes_of_one_at_a_time():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(20, 3, 8, 8, generator=g)
    images[0] = 0.0  # an all-black image and values outside [0, 1] are clamped alike
    images[1] = 1.7
    one = [png_bytes(x) for x in images]
    assert png_bytes_many(images, threads=4) == one
    assert png_bytes_many(list(images), threads=1) == one
    assert png_bytes_many(torch.empty(0, 3, 8, 8)) == []


def test_pngs_are_written_at_the_fast_zlib_level_and_stay_lossless(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from scdpo.utils.grid import save_grid
    from scdpo.utils.io import PNG_LEVEL

    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=g)  # noise: the levels' outputs differ
    eight_bit = (images * 255).round().byte().permute(0, 2, 3, 1).numpy()

    def at(level, a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()
    blobs = png_bytes_many(images, threads=1)
    assert PNG_LEVEL == 1 and blobs == [at(1, a) for a in eight_bit] != [at(6, a) for a in eight_bit]
    assert png_bytes_many(images, threads=1, level=6) == [at(6, a) for a in eight_bit]  # the benchmark's "today"
    for blob, a in zip(blobs, eight_bit):  # lossless: the pixels of the 8-bit images, exactly
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(blob))), a)
    path = save_grid(images, tmp_path / "grid.png", captions=list("abcd"), columns=2)
    grid = Image.open(path)
    assert grid.format == "PNG" and path.read_bytes() == at(1, np.asarray(grid.convert("RGB")))


def test_the_throughput_benchmark_parses_rows_and_compares_verdicts():
    tp = load_script("emojiworld_throughput")
    today = tp.parse_row("today:")
    assert today == {"name": "today", "dtype": "fp32", "batch": 64, "vae": 8, "tf32": False, "compile": False,
                     "png": 1, "graphs": False, "cl": False}
    assert tp.parse_row("x:dtype=bf16,batch=1024,compile=1,png=0,graphs=1,cl=1") | {} == {
        "name": "x", "dtype": "bf16", "batch": 1024, "vae": 8, "tf32": False, "compile": True, "png": 0,
        "graphs": True, "cl": True}
    # --kernels sorts kernels by kind from their names (cuDNN's convolutions name "fprop" or their layout)
    assert [tp.kernel_kind(n) for n in ("sm90_xmma_fprop_implicit_gemm_tf32f32", "nchwToNhwcKernel",
                                        "void at::native::(anonymous)::RowwiseMomentsCUDAKernel<float>",
                                        "fmha_cutlassF_f32",
                                        "ampere_sgemm_128x64_tn", "vectorized_elementwise_kernel<silu>",
                                        "some_new_kernel")] == [
        "convolution", "layout/copy", "normalisation", "attention", "gemm", "elementwise", "other"]
    for bad in ("x:batch", "x:size=3", "x:dtype=fp64"):
        with pytest.raises(SystemExit, match="--rows"):
            tp.parse_row(bad)
    prompts, seeds = tp.workload(5)
    assert len(prompts) == len(seeds) == 5 and len(set(seeds)) == 5
    # verdicts: image 1 loses concept 0 (benign: all verdicts differ, the harmful one does not);
    # image 2 gains concept 2 (harmful: both differ)
    ref = torch.tensor([[0.9, 0.1, 0.1], [0.9, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.8, 0.1]])
    new = torch.tensor([[0.8, 0.2, 0.1], [0.2, 0.1, 0.1], [0.1, 0.1, 0.7], [0.1, 0.9, 0.1]])
    images = torch.zeros(4, 3, 2, 2)
    a = tp.agreement(images + 0.25, new, images, ref, 0.5, harmful=[1, 2])
    assert a == {"max_abs_diff": 0.25, "mean_abs_diff": 0.25, "verdicts_equal": 0.5, "harmful_equal": 0.75}


def test_the_throughput_benchmark_times_the_whole_data_build_and_compares_choices(tmp_path, monkeypatch):
    import pandas as pd

    import scdpo.data.builder as builder

    tp = load_script("emojiworld_throughput")
    seen = []

    def fake_build(cfg):
        seen.append((cfg.batch_size, cfg.chunk_size, cfg.n_harmful, cfg.safe_prompt_winner, cfg.overlap,
                     cfg.sampler.dtype))
        Path(cfg.out).mkdir(parents=True)
        winner = [0, 1] if len(seen) < 5 else [0, 2]  # the fourth row chooses another winner for prompt b
        pd.DataFrame({"prompt_id": ["a", "b"], "status": ["ok", "ok"], "winner": winner, "loser": [3, 3],
                      "seeds": [[1, 2, 3, 4], [5, 6, 7, 8, 9]]}).to_parquet(Path(cfg.out) / "choices.parquet")
        (Path(cfg.out) / "seconds.json").write_text('{"seconds_by_phase": {"sampling": 1.5}}')
        return {"pairs": 2}

    monkeypatch.setattr(builder, "build", fake_build)
    rows = tp.build_rows(torch.device("cpu"), 2, 6, "cost-dir", tmp_path)
    # an untimed warm-up at today's settings, then today (one thing at a time, fp32 pinned: "auto" is TF32 on a
    # CUDA GPU since 2026-12-06), chunk 64, the defaults without the overlap, the defaults
    assert seen == [(64, 64, 4, True, False, "fp32"), (64, 64, 6, True, False, "fp32"),
                    (None, 64, 6, True, None, "auto"), (None, None, 6, True, False, "auto"),
                    (None, None, 6, True, None, "auto")]
    assert [r["images"] for r in rows] == [9, 9, 9, 9] and all(r["pairs"] == 2 for r in rows)
    assert [r["same_choice"] for r in rows] == [1.0, 1.0, 1.0, 0.5]
    assert all(r["seconds_by_phase"] == {"sampling": 1.5} for r in rows)  # each row's phases, from its folder


def test_the_throughput_benchmark_times_the_eval_with_the_cache_empty_then_read(tmp_path, monkeypatch):
    import os

    import scdpo.eval.run as run

    tp = load_script("emojiworld_throughput")
    seen = []

    def fake_run(cfg):
        seen.append((cfg.frechet_cache, cfg.overlap, os.environ.get("SCDPO_CACHE"), cfg.sampler.dtype))
        return {"suites": {"eval-clean": {"prompts": 4, "harmful_rate": 0.0, "alignment": 0.5}},
                "seconds_by_phase": {"sampling": 1.0}}

    monkeypatch.setattr(run, "run", fake_run)
    monkeypatch.delenv("SCDPO_CACHE", raising=False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stale").write_text("from an earlier run")
    rows = tp.eval_rows(torch.device("cpu"), 2, 4, tmp_path)
    cache = str(tmp_path / "cache")
    # an untimed warm-up without the cache, then today's (fp32 pinned) and the defaults
    assert seen == [(False, False, None, "fp32"), (False, False, cache, "fp32"), (True, False, cache, "auto"),
                    (True, False, cache, "auto"), (True, True, cache, "auto")]
    assert all(r["seconds_by_phase"] == {"sampling": 1.0} for r in rows)
    assert not (tmp_path / "cache").exists()  # emptied first; the fake run wrote nothing
    assert [r["name"].split(", ", 1)[1] for r in rows] == [
        "today", "defaults without overlap, cache empty", "defaults without overlap, cache read",
        "defaults with overlap, cache read"]
    assert "SCDPO_CACHE" not in os.environ or os.environ["SCDPO_CACHE"] != cache


def test_the_throughput_benchmarks_extra_eval_rows_and_todays_pngs(tmp_path, monkeypatch):
    """--dtypes and --graphs add the defaults with that precision / the sampler's graphs; today's rows write their
    images and grids at Pillow's default level 6, and everything after them at PNG_LEVEL again."""
    import scdpo.eval.run as run
    import scdpo.utils.grid as grid
    import scdpo.world.dataset as dataset

    tp = load_script("emojiworld_throughput")
    seen = []
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def fake_run(cfg):
        # the eval's own setting (None: off, unless the sampler's asks), as scdpo.eval.run resolves it
        graphs = bool(cfg.sampler.cuda_graphs if cfg.cuda_graphs is None else cfg.cuda_graphs)
        seen.append((cfg.sampler.dtype, graphs, grid.PNG_LEVEL,
                     dataset.png_bytes_many(images) == [png_at(6, im) for im in images]))
        return {"suites": {"eval-clean": {"prompts": 4, "harmful_rate": 0.0, "alignment": 0.5}}, "dtype": "x"}

    def png_at(level, image):
        import io

        from PIL import Image

        buf = io.BytesIO()
        a = (image * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(a).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    monkeypatch.setattr(run, "run", fake_run)
    rows = tp.eval_rows(torch.device("cpu"), 2, 4, tmp_path, dtypes=("bf16",), graphs=True)
    # warm-up, today, three defaults rows, then --dtypes bf16 and --graphs
    assert [(d, g) for d, g, *_ in seen] == [("fp32", False), ("fp32", False), ("auto", False), ("auto", False),
                                           ("auto", False), ("bf16", False), ("auto", True)]
    assert [level for _, _, level, _ in seen] == [1, 6, 1, 1, 1, 1, 1]  # the grids: level 6 for today's only
    assert [today for *_, today in seen] == [False, True, False, False, False, False, False]
    assert rows[-1]["name"].endswith("cuda graphs") and all(r["dtype"] == "x" for r in rows)
    assert grid.PNG_LEVEL == 1 and dataset.png_bytes_many(images) == [png_at(1, im) for im in images]


def test_the_throughput_benchmark_profiles_every_row_but_todays(tmp_path, monkeypatch):
    """--profile: each row but today's runs under cProfile and leaves OUT/profile-ROW.txt (the eval's and the
    build's), listing the functions the row called."""
    import pandas as pd

    import scdpo.data.builder as builder
    import scdpo.eval.run as run

    tp = load_script("emojiworld_throughput")

    def fake_run(cfg):
        return {"suites": {"eval-clean": {"prompts": 4, "harmful_rate": 0.0, "alignment": 0.5}}}

    def fake_build(cfg):
        Path(cfg.out).mkdir(parents=True)
        pd.DataFrame({"prompt_id": ["a"], "status": ["ok"], "winner": [0], "loser": [1],
                      "seeds": [[1, 2]]}).to_parquet(Path(cfg.out) / "choices.parquet")
        (Path(cfg.out) / "seconds.json").write_text("{}")
        return {"pairs": 1}

    monkeypatch.setattr(run, "run", fake_run)
    monkeypatch.setattr(builder, "build", fake_build)
    tp.eval_rows(torch.device("cpu"), 2, 4, tmp_path / "eval", profile=True)
    tp.build_rows(torch.device("cpu"), 2, 1, "cost-dir", tmp_path / "build", profile=True)
    assert sorted(p.name for p in (tmp_path / "eval").glob("profile-*.txt")) == [
        "profile-defaults-with-overlap-cache-read.txt", "profile-defaults-without-overlap-cache-empty.txt",
        "profile-defaults-without-overlap-cache-read.txt"]
    assert sorted(p.name for p in (tmp_path / "build").glob("profile-*.txt")) == [
        "profile-chunk-size-64.txt", "profile-defaults.txt", "profile-no-overlap.txt"]
    assert "fake_run" in (tmp_path / "eval" / "profile-defaults-with-overlap-cache-read.txt").read_text()
