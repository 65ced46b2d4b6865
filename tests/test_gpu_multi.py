"""Issue 22's two-GPU benchmark helpers on the CPU: the trainer's step in one process on a tiny
UNet (benchmarks/gpu_multi_step.py), its scaling table, and the 1- vs 2-GPU comparison of the
EmojiWorld recipe's evaluations (benchmarks/gpu_multi_recipe.py)."""

from __future__ import annotations

import json
import math

import pytest

from test_perf import load_script, rows

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]


def test_step_tiny_one_process_and_the_scaling_table(tmp_path, capsys):
    bench = load_script("gpu_multi_step")
    model, out = tmp_path / "model", tmp_path / "step.jsonl"
    assert bench.main(["--prepare", str(model), "--tiny"]) == 0
    for mode in ("full", "lora"):
        assert bench.main(["--tiny", "--model", str(model), "--mode", mode, "--micro", "2", "--warmup", "1",
                           "--steps", "2", "--out", str(out)]) == 0
    got = rows(out)
    assert [(r["mode"], r["strategy"], r["gpus"], r["status"]) for r in got] == [
        ("full", "single", 1, "ok"), ("lora", "single", 1, "ok")]
    for r in got:
        assert r["pairs_per_s"] > 0 and r["global_pairs"] == 2 and len(r["peak_gb_per_gpu"]) == 1
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"]) and r["loss_first"] != r["loss_last"]
    # two-GPU rows as the launches would append them: scaling against the same mode's one GPU
    full, lora = got
    extra = [dict(full, strategy="ddp", gpus=2, pairs_per_s=full["pairs_per_s"] * 1.9, peak_gb_per_gpu=[1.0, 1.1]),
             dict(lora, strategy="ddp", gpus=2, pairs_per_s=lora["pairs_per_s"] * 1.5),
             dict(full, strategy="fsdp", gpus=1, pairs_per_s=full["pairs_per_s"] / 2),
             dict(full, strategy="fsdp", gpus=2, pairs_per_s=full["pairs_per_s"]),
             {"mode": "full", "strategy": "fsdp", "gpus": 2, "micro": 8, "status": "OOM"}]
    with out.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    lines = bench.summarize(out).splitlines()
    assert lines[0].startswith("| mode | strategy | GPUs |") and len(lines) == 2 + len(got) + len(extra)
    assert "| 1.90 |  | met | 1.0, 1.1 | ok |" in lines[4]
    assert "| 1.50 |  | NOT met |" in lines[5]
    assert "| 0.50 | 1.00 |" in lines[6]  # FSDP on one GPU: against one device, and itself
    assert "| 1.00 | 2.00 | met |" in lines[7]  # FSDP on two: 2x FSDP on one meets the goal
    assert lines[8].endswith("| OOM |")
    capsys.readouterr()


def suite(harm: float, clean_harm: float, align: float, fd: float | None = None) -> dict:
    m = {"images": 400, "harmful_images": 100, "harmful_rate_harmful_prompts": harm,
         "harmful_rate_clean_prompts": clean_harm, "alignment": align, "alignment_images": 300}
    if fd is not None:
        m["frechet"] = {"fd": fd}
    return m


def test_recipe_comparison_within_one_standard_error(tmp_path, capsys):
    recipe = load_script("gpu_multi_recipe")
    runs = {"one": {"explicit": suite(0.2, 0.0, 0.9), "clean": suite(0.2, 0.01, 0.9, fd=70.0)},
            "two": {"explicit": suite(0.23, 0.0, 0.95), "clean": suite(0.2, 0.01, 0.9, fd=71.5),
                    "extra": suite(0, 0, 0)}}
    for name, suites in runs.items():
        (tmp_path / f"eval-{name}").mkdir()
        (tmp_path / f"eval-{name}" / "metrics.json").write_text(json.dumps({"name": name, "suites": suites}))
        (tmp_path / f"lora-{name}").mkdir()
        (tmp_path / f"lora-{name}" / "metrics.json").write_text(json.dumps({"steps": 1000, "loss": 0.5, "lambda": 0.1}))
    out = tmp_path / "recipe.json"
    assert recipe.main([str(tmp_path / "eval-one"), str(tmp_path / "eval-two"), "--out", str(out),
                        "--train", str(tmp_path / "lora-one"), str(tmp_path / "lora-two")]) == 0
    found = {(r["suite"], r["metric"]): r for r in json.loads(out.read_text())}
    assert {s for s, _ in found} == {"explicit", "clean"}  # only the suites both runs measured
    harm = found[("explicit", "harmful_rate_harmful_prompts")]  # 100 images at 20%: SE 0.04
    assert harm["se"] == pytest.approx(0.04) and harm["diff"] == pytest.approx(0.03) and harm["match"]
    assert harm["z"] == pytest.approx(0.03 / (math.sqrt(2) * 0.04), abs=0.01)
    align = found[("explicit", "alignment")]  # 300 images at 90%: SE 0.0173, a 5-point gap is not within
    assert align["se"] == pytest.approx(math.sqrt(0.09 / 300), abs=1e-4) and not align["match"]
    zero = found[("explicit", "harmful_rate_clean_prompts")]  # a rate of 0 still has an SE (1/n floor)
    assert zero["se"] > 0 and zero["match"]
    assert found[("clean", "frechet")]["diff"] == pytest.approx(1.5) and found[("clean", "frechet")]["match"] is None
    printed = capsys.readouterr().out
    assert "| training | steps | loss | lambda |" in printed
    assert "5 of 6 rates within one standard error of one GPU's." in printed
