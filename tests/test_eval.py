"""`scdpo eval` and `scdpo eval compare`: the metric core on known images, seeds, LoRA loading,
the report's sections, the comparison outputs and bad input."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scdpo.cli import main
from scdpo.eval.run import EvalConfig, Tools, expand, prompt_seed, reference_images, score_suite
from scdpo.models.t2i import T2IModel
from scdpo.models.testing import tiny_sd_pipeline
from scdpo.prompts.matching import mentioned_concepts
from scdpo.world.judge import load_default_judge
from scdpo.world.records import I2P_CATEGORIES, PromptRecord
from scdpo.world.suites import get_suite
from scdpo.world.vocab import load_vocabulary

FAST = ["--steps", "1", "--limit", "2", "--device", "cpu", "--no-frechet"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def judge():
    return load_default_judge()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


@pytest.fixture(scope="module")
def lora(tiny, tmp_path_factory, random_lora):
    """A random, clearly non-zero LoRA for the tiny pipeline, saved the way the trainer saves it."""
    return random_lora(tiny, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def runs(tiny, lora, tmp_path_factory):
    """Two tiny runs on the same seeds: base (plus a prompt file and a cost model) and base + LoRA."""
    from scdpo.cost import CostModel

    root = tmp_path_factory.mktemp("runs")
    prompts = root / "coco.txt"
    prompts.write_text("two dogs on a bus\na hot dog\n")
    CostModel.create().save_pretrained(root / "cost")  # untrained: only its statistics are checked
    # a CLIP-encoded tiny SD counts as a real model; these runs check the EmojiWorld metrics
    common = ["--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain", "emojiworld", *FAST]
    assert main(["eval", *common, "--prompts", str(prompts), "--cost-model", str(root / "cost"),
                 "--name", "base", "--out", str(root / "base")]) == 0
    assert main(["eval", *common, "--lora", str(lora[0]), "--guidance", "3", "--out", str(root / "lora")]) == 0
    return root


# ------------------------------------------------------------------ metric core
def _rendered(suite: str, n: int):
    records = get_suite(suite, n=n)
    return reference_images(records, 64), records


def test_rendered_harmful_images_score_harmful_rate_one(judge):
    images, records = _rendered("eval-harmful-explicit", 37)  # every harmful concept once
    m = score_suite(images, records, Tools(judge))
    assert m["harmful_rate"] == 1.0 and m["harmful_rate_harmful_prompts"] == 1.0
    assert m["harmful_requested_present"] == 1.0 and m["harmful_rate_clean_prompts"] is None
    assert set(m["harmful_rate_by_category"]) == set(I2P_CATEGORIES)
    assert all(v == 1.0 for v in m["harmful_rate_by_category"].values())
    assert sum(m["category_images"].values()) >= 37 and m["harmful_images"] == 37


def test_rendered_clean_images_score_zero_and_align(judge):
    from scdpo.eval.reward import EmojiWorldReward

    images, records = _rendered("eval-clean", 24)
    m = score_suite(images, records, Tools(judge, reward=EmojiWorldReward(judge)))
    assert m["harmful_rate"] == 0.0 and m["alignment"] == 1.0 and m["alignment_images"] == 24
    assert m["harmful_rate_by_category"] == {} and m["harmful_images"] == 0
    # the reward prefers the true render over another prompt's render
    shuffled = score_suite(images.roll(1, 0), records, Tools(judge, reward=EmojiWorldReward(judge)))
    assert shuffled["alignment"] < 0.5 and shuffled["reward_mean"] < m["reward_mean"]


class PooledPixels:
    """A stand-in feature extractor (4x4 average-pooled pixels) so Frechet tests run in milliseconds."""

    spec = "pool4"

    def features(self, images, batch_size=64):
        return F.adaptive_avg_pool2d(images, 4).flatten(1)


def test_frechet_is_zero_on_the_reference_and_grows_with_noise(judge):
    images, records = _rendered("eval-clean", 16)
    tools = Tools(judge, backbone=PooledPixels())
    same = score_suite(images, records, tools, reference=images)["frechet"]
    noisy = score_suite((images + 0.3 * torch.randn_like(images)).clamp(0, 1), records, tools, images)["frechet"]
    assert same["fd"] < 1e-6 < noisy["fd"] and (same["n_a"], same["n_b"], same["backbone"]) == (16, 16, "pool4")
    assert "frechet" not in score_suite(images, records, tools)  # no reference (prompt files): no Frechet


def test_score_suite_rejects_mismatched_input(judge):
    images, records = _rendered("eval-clean", 2)
    with pytest.raises(ValueError, match="2 images for 1 prompt records"):
        score_suite(images, records[:1], Tools(judge))


def test_coco_captions_are_matched_to_drawable_objects():
    assert mentioned_concepts("Two dogs sit next to a hot dog on a Bus.") == ("dog", "hot dog", "bus")
    assert mentioned_concepts("an orange cat at home in a business suit") == ("cat",)  # ambiguous words skipped
    assert mentioned_concepts("A man walking down a street") == ()
    assert all(c in load_vocabulary().by_name for c in mentioned_concepts("buses, trucks and boxes of pizzas"))


# ------------------------------------------------------------------ seeds
def test_seeds_are_fixed_per_prompt():
    r, fixed = PromptRecord("a cat", "t"), PromptRecord("a cat", "i2p", seed=1234)
    assert prompt_seed("s", 3, 0, r) == prompt_seed("s", 3, 0, r)
    assert len({prompt_seed("s", i, k, r) for i in range(20) for k in range(3)}) == 60
    assert prompt_seed("s", 0, 0, r) != prompt_seed("t", 0, 0, r)
    assert prompt_seed("s", 0, 0, fixed) == 1234 and prompt_seed("s", 0, 1, fixed) != 1234
    assert [(i, k) for i, k, _, _ in expand("s", [r, fixed], 2)] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_suite_seed_draws_fresh_prompts_of_the_same_recipe():
    from scdpo.eval.run import collect_suites

    draw0, draw1 = (collect_suites(EvalConfig(model="emojiworld", suites=["eval-harmful-implicit"], limit=37,
                                              suite_seed=s))["eval-harmful-implicit"] for s in (0, 1))
    assert [r.prompt for r in draw0] == [r.prompt for r in get_suite("eval-harmful-implicit", n=37)]  # the default
    assert sum(a.prompt != b.prompt for a, b in zip(draw0, draw1)) > 30  # fresh prompts ...
    assert [r.concepts for r in draw0] == [r.concepts for r in draw1]  # ... naming the same concepts in turn
    heldout = {k for c in load_vocabulary().harmful for k in c.heldout}
    assert all(any(k in r.prompt for k in heldout) for r in draw1)  # still held-out keywords only
    with pytest.raises(ValueError, match="--suite-seed must be >= 0"):
        EvalConfig(model="emojiworld", suite_seed=-1)


def test_two_runs_share_prompts_and_seeds(runs):
    base, other = (pd.read_parquet(runs / n / "suites/eval-clean/images.parquet") for n in ("base", "lora"))
    assert list(base["seed"]) == list(other["seed"]) and list(base["prompt"]) == list(other["prompt"])
    assert base["image"][0]["bytes"] != other["image"][0]["bytes"]  # the LoRA changed the image

def test_saved_image_is_the_model_sample_for_its_seed(runs, tiny):
    row = pd.read_parquet(runs / "base/suites/eval-harmful-explicit/images.parquet").iloc[1]
    saved = torch.from_numpy(np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))).permute(2, 0, 1) / 255
    again = T2IModel.from_pretrained(tiny, device="cpu").sample([row["prompt"]], [int(row["seed"])], steps=1,
                                                               progress=False)[0]
    assert (saved - again).abs().max() <= 0.5 / 255 + 1e-6  # same model, prompt and seed: same image


# ------------------------------------------------------------------ LoRA
def test_load_lora_fuses_the_adapter(tiny, lora):
    folder, policy = lora
    base = T2IModel.from_pretrained(tiny, device="cpu")
    kw = dict(steps=2, progress=False)
    before = base.sample(["a cat"], [7], **kw)
    fused = base.load_lora(folder).sample(["a cat"], [7], **kw)
    torch.testing.assert_close(fused, policy.sample(["a cat"], [7], **kw), atol=1e-4, rtol=0)
    assert (fused - before).abs().max() > 1e-2
    with pytest.raises(FileNotFoundError, match="no LoRA weights"):
        base.load_lora(tiny)  # a pipeline folder: no LoRA file at its top


# ------------------------------------------------------------------ the run folder and report
class _Report(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.classes, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "h3":
            self.classes.append((self.sections[-1], a.get("class")))
        elif tag == "img":
            self.images.append(a["src"])


def test_run_writes_metrics_report_and_images(runs):
    m = json.loads((runs / "base/metrics.json").read_text())
    assert m["name"] == "base" and list(m["suites"]) == ["eval-clean", "eval-harmful-explicit", "coco"]
    coco = m["suites"]["coco"]
    assert coco["kind"] == "prompt-file" and coco["alignment_images"] == 2 and coco["harmful_images"] == 0
    for s in m["suites"].values():
        assert set(s["cost"]) == {"mean", "frac_positive"} and s["reward_mean"] is not None
        assert len(pd.read_parquet(runs / "base" / s["images_file"])) == s["images"] == 2
    assert m["suites"]["eval-harmful-explicit"]["harmful_rate_by_category"]
    lora = json.loads((runs / "lora/metrics.json").read_text())
    assert lora["name"] == Path(lora["lora"]).name and lora["config"]["guidance_scale"] == 3.0
    assert m["dtype"] == m["config"]["dtype"] == "fp32"  # the precision it sampled in ("auto" on the CPU), resolved
    # where the time went (the CPU turns the overlap on: the worker's phases are apart; --no-frechet: none)
    for key, want in (("seconds_by_phase", {"setup", "sampling", "waiting", "report"}),
                      ("worker_seconds_by_phase", {"images", "scoring", "report"})):
        assert set(m[key]) == want and all(isinstance(v, float) and v >= 0 for v in m[key].values())
    report = _Report()
    report.feed((runs / "base/report.html").read_text())
    assert report.sections == ["summary", "suite-eval-clean", "suite-eval-harmful-explicit", "suite-coco"]
    for s in report.sections[1:]:
        assert {c for sec, c in report.classes if sec == s} >= {"harm", "quality", "grid"}
    assert ("suite-eval-harmful-explicit", "category") in report.classes
    assert len(report.images) == 3
    for src in report.images:  # embedded, decodable PNGs: the report needs no other file
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).format == "PNG"
    assert not list(runs.rglob("*.tmp"))


# ------------------------------------------------------------------ compare
def test_compare_writes_table_plots_and_grids(runs, capsys):
    out = runs / "cmp"
    assert main(["eval", "compare", str(runs / "base"), str(runs / "lora"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert "| base |" in table and "## All metrics, per suite" in table
    header = next(line for line in printed.splitlines() if line.startswith("| method"))
    assert header == ("| method | alignment (eval-clean) | harmful rate, harmful prompts (eval-harmful-explicit) | "
                      "safe object drawn (eval-harmful-explicit) | empty image (eval-harmful-explicit) |")
    csv = pd.read_csv(out / "table.csv")
    assert list(csv["method"])[0] == "base" and len(csv) == 2 and "eval-harmful-explicit/harmful_rate" in csv
    assert "eval-harmful-explicit/harmful_rate_se" in csv and "eval-clean/alignment_n" in csv
    assert not any(c.startswith("coco/") for c in csv)  # only in one run: compared on the intersection
    assert "intersection" in table
    for f in ("tradeoff.png", "categories.png", "grids/eval-clean.png", "grids/eval-harmful-explicit.png"):
        assert Image.open(out / f).format == "PNG"
    grid = Image.open(out / "grids/eval-clean.png")
    assert grid.height > 2 * 64  # one row per method
    report = _Report()
    report.feed((out / "report.html").read_text())
    assert {"metadata", "headline", "pooled", "per-suite", "tradeoff", "grids"} <= set(report.sections)
    assert len(report.images) == 4
    m = json.loads((runs / "base/metrics.json").read_text())
    suite = m["suites"]["eval-harmful-explicit"]  # every rate stores its count (docs/evaluation.md)
    assert suite["harmful_rate_n"] == suite["images"] == 2
    assert suite["harmful_rate_harmful_prompts_n"] == suite["harmful_images"] and "created" in m


def test_compare_same_name_twice(runs, capsys):
    assert main(["eval", "compare", str(runs / "base"), str(runs / "base"), "--out", str(runs / "cmp2")]) == 0
    out = capsys.readouterr().out
    assert "| base (base) |" in out and "intersection" not in out and "note:" not in out  # same runs: no notes


# ------------------------------------------------------------------ CLI and bad input
def _exit(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_help(capsys):
    assert _exit(["eval", "--help"]) == 0
    assert "--n-per-prompt" in capsys.readouterr().out
    assert _exit(["eval", "compare", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: scdpo eval compare")


def test_bad_input(tiny, tmp_path, capsys):
    assert _exit(["eval", "--model", str(tiny), "--suites", "eval-nope", "--out", str(tmp_path)]) == 2
    assert "eval-nope" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert _exit(["eval", "--model", str(tiny), "--suites", "none", "--prompts", str(empty), *FAST,
                  "--out", str(tmp_path / "o")]) == 2
    assert "empty.txt" in capsys.readouterr().err
    assert _exit(["eval", "--suites", "eval-clean"]) == 2
    assert "--model" in capsys.readouterr().err
    assert _exit(["eval", "compare", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert _exit(["eval", "--model", str(tiny), "--lora", str(tmp_path), "--suites", "eval-clean", *FAST,
                  "--out", str(tmp_path / "o")]) == 2
    assert "no LoRA weights" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvalConfig(model="m", suites="none")


def test_oracle_negative_prompt_names_the_prompts_harmful_concepts_and_keeps_order(tiny):
    from scdpo.eval.run import concept_negative, sample_all
    from scdpo.models.sampling import SamplerConfig

    harmful, clean = get_suite("eval-mixed", n=1)[0], get_suite("eval-clean", n=1)[0]
    names = concept_negative(harmful, None).split(", ")
    assert names and all(load_vocabulary()[n].harmful for n in names)
    assert set(names) <= set(harmful.concepts)
    assert concept_negative(clean, "x") == "x"  # no harmful concept: the default
    model = T2IModel.from_pretrained(tiny, device="cpu")
    recs = [replace_prompt(harmful, "a cat"), clean, replace_prompt(harmful, "a dog")]
    samples = expand("s", recs, 1)
    cfg = SamplerConfig(steps=2, progress=False)
    grouped = sample_all(model, samples, cfg, negative_from_concepts=True)
    plain = sample_all(model, samples, cfg)
    assert torch.allclose(grouped[1], plain[1], atol=1e-5)  # the clean prompt keeps the empty negative prompt
    # a harmful prompt sampled alone with its oracle negative prompt is the same image
    alone = model.sample([recs[2].prompt], [samples[2][2]],
                         SamplerConfig(steps=2, progress=False, negative_prompt=concept_negative(harmful, None)))
    assert torch.allclose(grouped[2], alone[0], atol=1e-5)
    assert not torch.allclose(grouped[0], plain[0], atol=1e-4)


def replace_prompt(record: PromptRecord, prompt: str) -> PromptRecord:
    from dataclasses import replace

    return replace(record, prompt=prompt)


def test_loading_and_fusing_our_lora_logs_no_warnings(tiny, lora, tmp_path):
    """EmojiWorld-style pipelines (MiniLM text encoder) and UNet-only LoRAs are ours: diffusers'
    "Expected types for text_encoder" and "No LoRA keys associated to BertModel" are noise there."""
    import logging

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        T2IModel.from_pretrained(tiny_sd_pipeline(tmp_path / "minilm", text_encoder="minilm"), device="cpu")
        T2IModel.from_pretrained(tiny, device="cpu").load_lora(lora[0])
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert [r.getMessage() for r in records] == []
