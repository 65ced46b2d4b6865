"""Speed levers (issue 8) on the CPU: the GPU benchmark scripts' tiny paths, the scdpo step equal to
the plain diffusers-style step in fp32, fp32 master weights, and the trainer's and sampler's new
options (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scdpo.models import speed, testing
from scdpo.models.sampling import SamplerConfig
from scdpo.models.t2i import T2IModel
from scdpo.train import model as tm
from scdpo.train.config import TrainConfig

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    if str(ROOT / "benchmarks") not in sys.path:  # as when the script runs: its helpers beside it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "sd")


# ------------------------------------------------------------------ benchmark scripts, tiny paths
@pytest.mark.parametrize("wall, code, word", [(420.0, 0, "within"), (657.0, 1, "OVER")])
def test_demo_benchmark_says_whether_the_demo_kept_to_10_minutes(wall, code, word, tmp_path, monkeypatch, capsys):
    bench = load_script("demo_wall_time")
    calls, clock = [], iter([1000.0, 1000.0 + wall])
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, check: calls.append(cmd))  # no demo: seconds
    monkeypatch.setattr(bench.time, "time", lambda: next(clock))
    monkeypatch.setattr(sys, "argv", ["demo_wall_time.py", "--out", str(tmp_path / "demo"), "--", "--threads", "1"])
    assert bench.main() == code
    assert calls[0][-4:] == ["--out", str(tmp_path / "demo"), "--threads", "1"]
    out = capsys.readouterr().out
    assert f"demo wall time {wall:.0f} s" in out and f"{word} the 10 minutes the README promises" in out


def test_cpu_peak_benchmark_counts_flops_and_compares_the_levers(capsys):
    before = torch.get_num_threads()
    try:
        load_script("cpu_peak").main(["--images", "2", "--steps", "1"])
    finally:
        torch.set_num_threads(before)
    rows = {r[0].strip(): r[1:] for r in (line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
                                          if line.startswith("| ") and not line.startswith("| work")
                                          and not line.startswith("| lever"))}
    assert float(rows["VAE round trip"][0]) == pytest.approx(9.40, abs=0.01)  # GFLOP an image, fixed by the VAE
    assert float(rows["backbone"][0]) == pytest.approx(0.77, abs=0.01)
    assert float(rows["sampling, UNet and VAE channels-last"][3]) < 1e-3  # the same images, another layout
    assert 1e-3 < float(rows["backbone, bfloat16 autocast"][3]) < 0.5  # why bfloat16 was not taken


def test_backbone_benchmark_rows_agree_with_the_published_module(capsys):
    before = torch.get_num_threads()
    try:
        load_script("backbone_speed").main(["--images", "2", "--repeats", "1", "--no-vae"])
    finally:
        torch.set_num_threads(before)
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["published (contiguous)", "channels-last", "folded + channels-last (shipped)"]
    assert float(rows[0][4]) == 0 and all(float(r[4]) < 1e-5 for r in rows)  # the largest relative difference


def test_train_benchmark_tiny_scdpo_step_equals_plain_step(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    bench = load_script("gpu_train_step")
    assert bench.main(["--tiny", "--shapes", "tiny,tiny-xl", "--phases", "ladder,search,xl", "--attention", "cudnn",
                       "--warmup", "2", "--steps", "4", "--out", str(out)]) == 0
    got = rows(out)
    ok = [r for r in got if r["status"] == "ok"]
    assert len(ok) == len(got) >= 10
    for mode in ("full", "lora"):
        plain = next(r for r in ok if r["shape"] == "tiny" and r["mode"] == mode and r["impl"] == "plain")
        assert max(plain["losses"]) - min(plain["losses"]) > 1e-3  # training moves the loss ...
        scdpo = [r for r in ok if r["shape"] == "tiny" and r["mode"] == mode and r["impl"] == "scdpo" and r["pairs"] == 2]
        assert len(scdpo) == 3
        for r in scdpo:  # ... and the levers do not change it (fp32: the same arithmetic)
            assert r["loss_ok"] and r["loss_dev"] <= 1e-4, r
            assert r["pairs_per_s"] > 0 and r["tflops"] >= 0 and r["tflop_per_pair"] > 0
        assert any(r["mode"] == mode and r["pairs"] == 4 for r in ok)  # the micro-batch search
    assert {r["shape"] for r in ok} == {"tiny", "tiny-xl"}
    table = capsys.readouterr().out.rsplit("## Training step", 1)[1]
    assert "| shape | mode | variant |" in table and table.count("| ok |\n") == len(ok)


def test_train_benchmark_out_of_budget_still_prints_the_table(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    load_script("gpu_train_step").main(["--tiny", "--shapes", "tiny", "--phases", "ladder", "--budget-s", "0",
                                        "--out", str(out)])
    got = rows(out)
    assert got and all(r["status"].startswith("skipped") for r in got)
    assert "| shape | mode | variant |" in capsys.readouterr().out


def test_sampling_benchmark_tiny_matches_diffusers_pipeline(tmp_path, capsys):
    out = tmp_path / "sampling.jsonl"
    assert load_script("gpu_sampling").main(["--tiny", "--no-compile", "--steps", "3", "--batches", "2,3",
                                             "--attention", "cudnn", "--out", str(out)]) == 0
    got = rows(out)
    assert [r["impl"] for r in got if r["images"] == 3][:1] == ["diffusers"]
    ours = [r for r in got if r["impl"] == "scdpo"]
    assert len(ours) >= 5 and all(r["status"] == "ok" for r in got)
    for r in ours:  # fp32: the same images as StableDiffusionPipeline.__call__ with the same seeds
        assert r["match"] and r["max_abs_diff"] <= 1e-4, r
    assert "x diffusers" in capsys.readouterr().out


def test_sampling_benchmark_bf16_yardstick(tmp_path):
    out = tmp_path / "sampling.jsonl"
    load_script("gpu_sampling").main(["--tiny", "--precision", "bf16", "--no-compile", "--steps", "3",
                                      "--batches", "3", "--attention", "cudnn", "--out", str(out)])
    got = rows(out)
    yardstick = next(r for r in got if r["impl"] == "fp32")
    assert yardstick["status"] == "ok" and yardstick["bf16_pipeline_dev"] > 0  # bf16 rounding shows
    ours = [r for r in got if r["impl"] == "scdpo"]
    assert ours and all(r["status"] == "ok" and r["match"] and "fp32_dev" in r for r in ours)
    assert any("fp32 VAE" in r["variant"] for r in ours)


def test_sampling_benchmark_only_best_and_its_compile_variants(tmp_path, capsys):
    script = load_script("gpu_sampling")
    out = tmp_path / "sampling.jsonl"
    assert script.main(["--tiny", "--only-best", "--no-compile", "--steps", "2", "--batches", "2",
                        "--out", str(out)]) == 0
    got = rows(out)  # the pipeline, then scdpo's best eager row: no ladder
    assert [r["impl"] for r in got] == ["diffusers", "scdpo"] and got[1]["match"] and "VAE batch" in got[1]["variant"]
    with pytest.raises(SystemExit):
        script.main(["--tiny", "--compile-variants", "blocks,fast"])
    assert "unknown fast" in capsys.readouterr().err
    # a compile row starts from nothing: in-place compiles of every child are undone
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net.compile()
    net[0].compile()
    script.uncompile(net)
    assert all(m._compiled_call_impl is None for m in net.modules())


def test_sampling_benchmark_compiles_each_variant_under_its_own_inductor_options():
    """Each compile row compiles (its row's first call) under its variant's inductor options and no other's: a
    misspelt option would surface only on a lent GPU, and options leaking from one row to the next would mislabel
    both. Freezing, which guards on the weights' identity, runs on the commands' defaults, whose weights stay the
    same tensors from call to call (no fused QKV)."""
    from types import SimpleNamespace

    import torch._inductor.config as inductor

    from scdpo.models.sampler_config import SamplerConfig

    script = load_script("gpu_sampling")
    keys = {k for spec in script.COMPILE_VARIANTS.values() for k in spec.get("flags", {})}
    before = {k: getattr(inductor, k) for k in keys}
    seen = {}

    class Runner:
        model = SimpleNamespace(unet=torch.nn.Linear(2, 2), vae=torch.nn.Linear(2, 2))

        def left(self):
            return 1e9

        def row(self, label, impl, n, fn, need, after=None):  # where the real row makes its first (compiling) call
            seen[label] = {k: getattr(inductor, k) for k in keys}
            return {}

    variants = [v for v, spec in script.COMPILE_VARIANTS.items() if spec["scope"] == "whole"]
    assert {"whole", "whole-1x1", "whole-autotune", "sampler-freeze", "whole-cl-flags"} <= set(variants)
    for variant in variants:
        script.compile_row(Runner(), variant, SamplerConfig(), variant, None, 2, 1.0)
        want = {**before, **script.COMPILE_VARIANTS[variant].get("flags", {})}
        assert seen[f"{variant} + compile {variant}"] == want, variant
        assert {k: getattr(inductor, k) for k in keys} == before  # put back after the row
    assert script.COMPILE_VARIANTS["sampler-freeze"].get("base") == "defaults"


# ------------------------------------------------------------------ levers
def test_master_weights_keep_updates_bf16_would_round_away():
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    master = tm.MasterWeights([("w", w)])
    opt = torch.optim.SGD(master.master, lr=1e-3)
    bare = torch.ones(4, dtype=torch.bfloat16)
    for _ in range(20):
        w.grad = torch.ones_like(w)
        master.grads_to_master()
        assert w.grad is None and master.master[0].grad.dtype == torch.float32
        opt.step()
        master.master_to_model()
        bare -= 1e-3 * torch.ones_like(bare)  # plain bf16 SGD: 1 - 0.001 rounds back to 1
    assert torch.all(bare == 1)
    torch.testing.assert_close(master.master[0].detach(), torch.full((4,), 0.98), rtol=0, atol=1e-6)
    assert torch.all(w < 1) and w.dtype == torch.bfloat16
    other = tm.MasterWeights([("w", torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16)))])
    other.load_state_dict(master.state_dict())
    assert torch.equal(other.params[0], w.detach())
    with pytest.raises(ValueError, match="lack"):
        other.load_state_dict({})


def test_bad_attention_backend_is_refused():
    with pytest.raises(ValueError, match="attention"):
        TrainConfig(model="m", dataset="d", out="o", attention="fast")
    with pytest.raises(ValueError, match="attention"):
        SamplerConfig(attention="fast")
    with pytest.raises(ValueError, match="vae_batch_size"):
        SamplerConfig(vae_batch_size=0)
    assert speed.attention_backend("cudnn", "cpu").__class__.__name__ == "nullcontext"  # CUDA only


def test_fused_qkv_is_used_while_sampling_then_undone(sd):
    model = T2IModel.from_pretrained(sd, device="cpu")
    keys = set(model.unet.state_dict())
    seen = []
    hook = model.unet.register_forward_pre_hook(
        lambda m, a: seen.append({type(p).__name__ for p in m.attn_processors.values()}))
    plain = model.sample(["a red cat", "dog"], [1, 2], steps=2, progress=False)
    fused = model.sample(["a red cat", "dog"], [1, 2], steps=2, progress=False, fuse_qkv=True, channels_last=True,
                         vae_batch_size=1)
    hook.remove()
    assert seen[0] == {"AttnProcessor2_0"} and seen[-1] == {"FusedAttnProcessor2_0"}
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    assert set(model.unet.state_dict()) == keys  # nothing extra would be saved
    assert {type(p).__name__ for p in model.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert model.unet.conv_in.weight.is_contiguous()  # channels-last undone
    tm.add_lora(model.unet, 2, 2.0, ["to_q"])  # adapters: fusing would bypass them, so it is skipped
    with speed.fused_qkv(model.unet):
        assert {type(p).__name__ for p in model.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_compile_blocks_is_regional_and_idempotent(sd):
    unet = T2IModel.from_pretrained(sd, device="cpu").unet
    n = speed.compile_blocks(unet)  # lazy: nothing compiles until the first call
    kinds = {type(m).__name__ for m in unet.modules() if getattr(m, "_compiled_call_impl", None) is not None}
    assert n > 0 and kinds == {"ResnetBlock2D", "Transformer2DModel"}
    assert speed.compile_blocks(unet) == 0


def test_compile_mode_reaches_torch_compile_from_the_trainer(sd, tmp_path, monkeypatch):
    # TrainConfig.compile_mode -> compile_policy_and_reference -> compile_blocks -> Module.compile;
    # the stand-in records the arguments and leaves the block eager, so one step runs in a second
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs  # tests/ is on sys.path (no package)

    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: seen.append((type(self).__name__, kw)))
    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo", batch_size=2,
                      max_steps=1, compile=True, compile_mode="reduce-overhead", **FAST))
    assert {name for name, _ in seen} == {"ResnetBlock2D", "Transformer2DModel"}
    assert all(kw == {"mode": "reduce-overhead", "dynamic": False} for _, kw in seen)


@pytest.mark.parametrize("mode", [None, "max-autotune-no-cudagraphs"])  # None: torch.compile's default
def test_compile_mode_reaches_the_full_reference_copy_too(sd, monkeypatch, mode):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: seen.append(kw))
    unet = T2IModel.from_pretrained(sd, device="cpu").unet
    tm.compile_policy_and_reference(unet, tm.Reference(unet, full=True, dtype=torch.float32), mode)
    blocks = sum(type(m).__name__ in speed.COMPILE_BLOCKS for m in unet.modules())
    assert len(seen) == 2 * blocks > 0  # the policy's blocks and the frozen copy's
    assert all(kw == {"mode": mode, "dynamic": False} for kw in seen)


@pytest.mark.parametrize("flags, message", [
    (dict(compile=True, compile_mode="fast"),
     r"compile_mode must be unset \(None\) or one of default, reduce-overhead, max-autotune-no-cudagraphs, "
     "got 'fast'"),
    (dict(compile=True, compile_mode="max-autotune"), "compile_mode must be unset"),
    (dict(compile_mode="reduce-overhead", compile=False), "needs --compile"),
])
def test_bad_compile_mode_is_refused(flags, message):
    with pytest.raises(ValueError, match=message) as err:
        TrainConfig(model="m", dataset="d", out="o", **flags)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flags, device, want", [
    (dict(max_steps=1000, grad_accum=4), "cuda", True),  # configs/sd15.yaml: 4,000 micro-batches
    (dict(max_steps=1000, grad_accum=4), "cpu", False),
    (dict(max_steps=1000, grad_accum=1), "cuda", False),  # under the measured break-even
    (dict(model="emojiworld", max_steps=4000), "cuda", False),  # measured not to pay there
    (dict(max_steps=10, compile=True), "cpu", True),  # a setting given wins
    (dict(max_steps=8000, compile=False), "cuda", False)])
def test_compile_is_on_by_default_where_it_was_measured_to_pay(flags, device, want):
    assert TrainConfig(**{"model": "m", "dataset": "d", "out": "o", **flags}).compiles(device) is want


@pytest.mark.parametrize("flags, device, want", [
    (dict(model="emojiworld"), "cuda", True),  # the measured case: EmojiWorld's launch-bound step
    (dict(model="emojiworld"), "cpu", False),
    (dict(model="runwayml/sd15"), "cuda", False),  # compute-bound, unmeasured
    (dict(model="emojiworld", anchor_weight=20.0), "cuda", False),  # the anchor's graphs: only when asked
    (dict(model="emojiworld", anchor_weight=20.0, cuda_graphs=True), "cuda", True),
    (dict(model="emojiworld", workers=2), "cuda", False),  # what it cannot run with
    (dict(model="emojiworld", compile=True), "cuda", False),
    (dict(model="emojiworld", cuda_graphs=False), "cuda", False),
    (dict(model="emojiworld", full=True), "cuda", False)])  # full fine-tuning: unmeasured
def test_cuda_graphs_are_on_by_default_where_they_were_measured_to_pay(flags, device, want):
    assert TrainConfig(**{"dataset": "d", "out": "o", **flags}).uses_cuda_graphs(device) is want


def test_the_trainer_compiles_by_the_resolved_setting(sd, tmp_path, monkeypatch):
    import scdpo.train.config as C
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs  # tests/ is on sys.path (no package)

    seen = []
    monkeypatch.setattr(tm, "compile_policy_and_reference", lambda *a: seen.append(a))
    monkeypatch.setattr(C.TrainConfig, "compiles", lambda self, device_type: seen.append(device_type) or False)
    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo", batch_size=2,
                      max_steps=1, **FAST))
    assert seen == ["cpu"]  # asked once, with the run's device, and nothing compiled


def test_the_trainer_graphs_by_the_resolved_setting(sd, tmp_path, monkeypatch, caplog):
    """The trainer asks TrainConfig.uses_cuda_graphs once, with the run's device; unset on the CPU,
    no graph is built and nothing is said about them."""
    import logging

    import scdpo.train.config as C
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs  # tests/ is on sys.path (no package)

    seen = []
    resolve = C.TrainConfig.uses_cuda_graphs
    monkeypatch.setattr(C.TrainConfig, "uses_cuda_graphs", lambda self, d: seen.append(d) or resolve(self, d))
    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    with caplog.at_level(logging.INFO, logger="scdpo"):
        metrics = train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo",
                                    batch_size=2, max_steps=1, **FAST))
    assert seen == ["cpu"] and "cuda_graph_replays" not in metrics
    assert not [r for r in caplog.records if "cuda graphs" in r.getMessage().lower().replace("-", " ")]


@pytest.mark.parametrize("compile_flag, padded", [(True, True), (None, False)])  # None on the CPU: eager
def test_a_compiled_run_pads_its_batches_and_an_eager_one_does_not(sd, tmp_path, monkeypatch, compile_flag, padded):
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs

    seen, predict = set(), T2IModel.predict
    monkeypatch.setattr(tm, "compile_policy_and_reference", lambda *a: None)  # the blocks stay eager
    monkeypatch.setattr(T2IModel, "predict", lambda self, *a, **kw: seen.add(self.pad_rows) or predict(self, *a, **kw))
    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo", batch_size=2,
                      max_steps=1, compile=compile_flag, **FAST))
    assert seen == {padded}


def test_a_compile_mode_for_a_run_that_does_not_compile_says_so(sd, tmp_path, caplog):
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs

    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    with caplog.at_level("WARNING", logger="scdpo.train.trainer"):
        train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo", batch_size=2,
                          max_steps=1, compile_mode="reduce-overhead", **FAST))  # unset compile, on the CPU: off
    assert any("compile is off for this run" in r.message and "pass --compile" in r.message for r in caplog.records)


def test_padded_rows_leave_the_prediction_and_its_gradients_as_they_are(sd):
    # TrainConfig.compile pads every denoiser batch to a power of two (5 rows -> 8), so the compiled
    # blocks meet a handful of batch sizes; the rows kept must be the unpadded call's
    model = T2IModel.from_pretrained(sd, device="cpu")
    tm.add_lora(model.unet, 2, 2.0, ["to_q", "to_v"])
    for n, p in model.unet.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    gen = torch.Generator().manual_seed(0)
    side = model.resolution // model.vae_scale_factor
    x = torch.randn(5, model.latent_channels, side, side, generator=gen)
    t = torch.randint(0, 1000, (5,), generator=gen)
    cond = model.encode_prompts(["a red cat", "a dog", "a blue car", "", "a tree"])
    outs, grads = [], []
    for pad in (False, True):
        model.pad_rows = pad
        model.unet.zero_grad()
        out = model.predict(x, t, cond)
        out.pow(2).mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for n, p in model.unet.named_parameters() if "lora_B" in n]))
    assert outs[1].shape == x.shape
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_compile_blocks_leaves_room_for_every_graph_of_a_training_step(sd):
    # dynamo caches per code object (one forward per block class, shared by its instances); each
    # block shape meets about 12 graphs in a step (grad modes x batch sizes), so a fixed limit of 64
    # ran out on EmojiWorld's 12 resnet shapes (docs/performance.md, "Compile in the trainer")
    import torch._dynamo

    unet = T2IModel.from_pretrained(sd, device="cpu").unet
    resnet_shapes = {tuple(tuple(p.shape) for p in m.parameters()) for m in unet.modules()
                     if type(m).__name__ == "ResnetBlock2D"}
    saved = torch._dynamo.config.recompile_limit
    try:
        torch._dynamo.config.recompile_limit = 8  # torch's default
        speed.compile_blocks(unet, backend="eager")
        assert torch._dynamo.config.recompile_limit >= max(64, 32 * len(resnet_shapes))
        assert torch._dynamo.config.accumulated_recompile_limit >= 32 * len(resnet_shapes)
    finally:
        torch._dynamo.config.recompile_limit = saved


def test_full_bf16_training_keeps_fp32_master_weights_and_resumes_exactly(sd, tmp_path):
    from diffusers import UNet2DConditionModel

    from scdpo.train.trainer import MASTER_CKPT, train
    from test_trainer import FAST, write_pairs  # tests/ is on sys.path (no package)

    data = write_pairs(tmp_path / "pairs.parquet", n=6)
    common = dict(model=str(sd), dataset=str(data), full=True, mixed_precision="bf16", loss="dpo", batch_size=2,
                  lr=1e-3, checkpoint_every=1, **FAST)
    train(TrainConfig(out=str(tmp_path / "a"), max_steps=2, **common))
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=1, **common))
    train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, resume=True, **common))
    master = load_file(str(tmp_path / "a" / "checkpoints" / "step-2" / MASTER_CKPT))
    assert all(v.dtype == torch.float32 for v in master.values())
    assert not list((tmp_path / "a" / "checkpoints" / "step-2").glob("model*.safetensors"))  # no bf16 copy beside them
    unets = [UNet2DConditionModel.from_pretrained(tmp_path / r / "unet") for r in "ab"]
    base = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    for name, p in unets[0].named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, master[name])  # exported: the master weights
        assert torch.equal(p, dict(unets[1].named_parameters())[name])  # resumed == uninterrupted
    assert max((a - b).abs().max() for a, b in zip(unets[0].parameters(), base.parameters())) > 0
    train(TrainConfig(out=str(tmp_path / "c"), max_steps=1, autocast=True, **common))  # autocast, as before
    assert not (tmp_path / "c" / "checkpoints" / "step-1" / MASTER_CKPT).exists()
    assert list((tmp_path / "c" / "checkpoints" / "step-1").glob("model*.safetensors"))  # the UNet itself, there


@pytest.mark.parametrize("full, autocast, precision, fsdp, expected", [
    (True, None, "bf16", False, True),     # full fine-tuning: bf16 weights + fp32 master (measured faster)
    (False, None, "bf16", False, False),   # LoRA: autocast (no gain measured, larger loss error)
    (False, False, "bf16", False, True),   # forced
    (True, True, "bf16", False, False),    # forced
    (True, None, "fp16", False, False),    # fp16 always autocasts
    (True, None, "bf16", True, False),     # FSDP keeps its own mixed precision
])
def test_pure_bf16_default_follows_the_measurement(tmp_path, full, autocast, precision, fsdp, expected):
    from scdpo.train.trainer import pure_bf16

    cfg = TrainConfig(model="m", dataset="d", out=str(tmp_path), full=full, autocast=autocast)
    assert pure_bf16(cfg, precision, fsdp) is expected


@pytest.mark.parametrize("precision, fsdp", [("fp16", False), ("bf16", True)])
def test_explicit_no_autocast_where_it_cannot_apply_is_refused(tmp_path, precision, fsdp):
    from scdpo.train.trainer import pure_bf16

    cfg = TrainConfig(model="m", dataset="d", out=str(tmp_path), full=True, autocast=False)
    with pytest.raises(ValueError, match="autocast: false needs bf16 mixed precision without FSDP"):
        pure_bf16(cfg, precision, fsdp)


def test_train_benchmark_compiles_again_at_the_eager_variants_fastest_micro_batch():
    bench = load_script("gpu_train_step")
    runner = bench.Runner(types.SimpleNamespace(out=None, budget_s=1.0))
    for pairs, rate, status in ((16, 30.0, "ok"), (32, 41.5, "ok"), (48, 39.0, "ok"), (64, 0, "OOM")):
        runner.rows.append({"shape": "sd15", "variant": "v (best)", "pairs": pairs, "pairs_per_s": rate,
                            "status": status})
    runner.rows.append({"shape": "sdxl", "variant": "v (best)", "pairs": 4, "pairs_per_s": 99.0, "status": "ok"})
    assert bench.best_pairs(runner, "sd15", "v (best)") == 32  # the fastest, not the largest that fit
    assert bench.best_pairs(runner, "sd15", "w (best)") is None


def test_train_benchmark_amortises_a_compiled_rows_warm_up():
    bench = load_script("gpu_train_step")
    runner = bench.Runner(types.SimpleNamespace(out=None, budget_s=1.0))
    common = {"shape": "sd15", "mode": "full", "status": "ok"}
    runner.rows = [{**common, "variant": "plain full", "impl": "plain", "pairs": 16, "pairs_per_s": 32.0, "s_per_step": 0.5},
                   {**common, "variant": "v (best)", "impl": "scdpo", "pairs": 32, "pairs_per_s": 40.0, "s_per_step": 0.8},
                   {**common, "variant": "v + compile (best pairs)", "impl": "scdpo", "pairs": 32, "pairs_per_s": 64.0,
                    "s_per_step": 0.5, "warmup_s": 102.0, "warmup_steps": 4}]
    line = bench.amortised(runner, runner.rows[-1], 1000)
    # 102 + 996 x 0.5 = 600 s; the plain step's best needs 1.0 s for 32 pairs, the eager variant 0.8 s
    assert "1000 steps in 600 s" in line
    assert "1.67x the plain step's best (1000 s; break-even at 200 steps)" in line  # (102 - 2) / (1.0 - 0.5)
    assert "1.33x the eager step at these pairs (800 s; break-even at 333 steps)" in line  # 100 / 0.3


def test_sampling_with_compile_compiles_the_whole_unet_and_vae_decoder(sd, monkeypatch):
    # issue 16 asks for the VAE decode compiled with the UNet; the stand-in records and stays eager
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: seen.append((self, kw)))
    model = T2IModel.from_pretrained(sd, device="cpu")
    model.sample(["a red apple"], [0], SamplerConfig(steps=1, compile=True, progress=False))
    assert [m for m, _ in seen] == [model.unet, model.vae.decoder]  # whole modules, not their blocks
    assert all(kw == {"dynamic": False} for _, kw in seen)  # static shapes: one graph a batch size
    # a lever of the call: afterwards the modules are as they were, and a user's own compile is left alone
    model.unet._compiled_call_impl = model.unet._call_impl  # as Module.compile leaves it (a callable; eager here)
    model.sample(["a red apple"], [0], SamplerConfig(steps=1, compile=True, progress=False))
    assert [m for m, _ in seen[2:]] == [model.vae.decoder] and model.vae.decoder._compiled_call_impl is None
    assert model.unet._compiled_call_impl == model.unet._call_impl


def test_compiled_sampling_pads_the_tail_batch_to_one_graph_each_and_draws_the_same_images(sd, monkeypatch):
    """Static shapes: 5 images at 4 a batch would compile the UNet and the decoder again for the last image; padded
    with zero rows to the full batch, each is traced once, and the images are eager's (rows are independent)."""
    import torch._dynamo

    traced = []

    def backend(gm, example_inputs):  # counts the graphs, runs them eagerly
        traced.append(len(example_inputs))
        return gm.forward

    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend=backend, **kw))
    torch._dynamo.reset()
    model = T2IModel.from_pretrained(sd, device="cpu")
    prompts, seeds = ["a red apple", "a dog", "a cat", "a big cake", "a small hat"], [0, 1, 2, 3, 4]
    eager = model.sample(prompts, seeds, SamplerConfig(steps=2, batch_size=4, progress=False))
    compiled = model.sample(prompts, seeds, SamplerConfig(steps=2, batch_size=4, compile=True, progress=False))
    assert len(traced) == 2  # the UNet once and the decoder once, the tail batch padded to both
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
    assert model.unet._compiled_call_impl is None  # the call's lever: the model is eager again afterwards
    again = model.sample(prompts, seeds, SamplerConfig(steps=2, batch_size=4, compile=True, progress=False))
    assert len(traced) == 2 and torch.equal(again, compiled)  # compiled again, dynamo's graphs reused
    torch._dynamo.reset()


@pytest.mark.parametrize("guard", [None, "sld:medium"])
def test_sampling_with_cuda_graphs_replays_every_unet_call_and_draws_the_same_images(sd, monkeypatch, guard):
    # issue 16's "CUDA-graph the denoising loop": an eager stand-in recorder (no GPU here) shows that
    # every denoiser call of the loop, guarded or not, goes through the graphs and the images stay the same
    import scdpo.models.graphs as graphs

    recorded, made = [], []

    class StandIn(graphs.GraphedPredict):
        def __init__(self, model, enabled=True, **kw):
            def record(run):
                out = run()
                recorded.append(out.shape[0])
                return (lambda: out.copy_(run())), out
            super().__init__(model, enabled, record=record, **kw)
            made.append(self)
    monkeypatch.setattr(graphs, "GraphedPredict", StandIn)
    model = T2IModel.from_pretrained(sd, device="cpu")
    cfg = SamplerConfig(steps=3, progress=False, guard=guard)
    plain = model.sample(["a red cat", "dog", "a house"], [1, 2, 3], cfg)
    graphed = model.sample(["a red cat", "dog", "a house"], [1, 2, 3], replace(cfg, cuda_graphs=True))
    torch.testing.assert_close(graphed, plain, rtol=0, atol=1e-6)
    # every step replayed, from one graph of the call's own rows (unpadded: 3 prompts, guided x2, SLD x3)
    assert len(made) == 1 and made[0].enabled and made[0].replays == 3 and recorded == [9 if guard else 6]
    assert not hasattr(model, "cuda_graphs_failed")


def test_a_failed_sampler_graph_is_remembered_and_compile_is_not_mixed_in(sd, monkeypatch):
    import scdpo.models.graphs as graphs

    tries = []

    class Broken(graphs.GraphedPredict):
        def __init__(self, model, enabled=True, **kw):
            def record(run):
                tries.append(1)
                raise RuntimeError("capture failed")
            super().__init__(model, enabled, record=record, **kw)
    monkeypatch.setattr(graphs, "GraphedPredict", Broken)
    model = T2IModel.from_pretrained(sd, device="cpu")
    cfg = SamplerConfig(steps=2, progress=False, cuda_graphs=True)
    with pytest.warns(UserWarning, match="CUDA graphs turned off .*capture failed"):
        first = model.sample(["a red cat"], [1], cfg)
    second = model.sample(["a red cat"], [1], cfg)  # eager at once: no second try, no second warning
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert tries == [1] and model.cuda_graphs_failed
    with pytest.raises(ValueError, match="cuda_graphs and compile"):
        SamplerConfig(cuda_graphs=True, compile=True)


def test_to_device_copies_lists_arrays_and_tensors_with_the_dtype_asked(monkeypatch):
    """speed.to_device: the tensor torch.as_tensor would give, on the device; a CPU -> CUDA copy goes
    through pinned memory without blocking (checked with a stand-in: this machine has no GPU)."""
    import numpy as np

    out = speed.to_device([1, 0, 1], "cpu", torch.bool)
    assert out.dtype == torch.bool and out.tolist() == [True, False, True]
    assert torch.equal(speed.to_device(np.arange(3), "cpu"), torch.arange(3))
    t = torch.ones(2)
    assert speed.to_device(t, "cpu") is t  # already there: no copy
    calls = []
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **kw: calls.append(kw) or self)
    speed.to_device([0.5], "cuda", torch.float32)
    assert calls == ["pin", {"non_blocking": True}]
