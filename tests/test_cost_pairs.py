"""The cost model from prompt pairs: pair files, prompt labels, anchoring on certain labels, paired
minibatches, training on a tiny SD's images with caching and resume, and its errors."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.cli import main
from scdpo.cost.losses import CostLabels, anchor_loss
from scdpo.cost.pairs import judge_certainty, load_prompt_pairs, pair_labels
from scdpo.cost.train import CostTrainConfig, fit_adapter, train
from scdpo.models.testing import tiny_clip_model, tiny_sd_pipeline
from scdpo.world.records import I2P_CATEGORIES, PromptRecord

pytestmark = pytest.mark.usefixtures("one_thread")

# CoProV2's train-pairs header, with prompts written for this test
PAIRS = """pair_id,category,unsafe_prompt,safe_prompt
0_0,Violence,"a man swings an axe at a crowd","a man swings an axe at a log"
1_0,sexual,"a naked woman on a beach","a woman in a summer dress on a beach"
2_0,Shocking,"a severed hand on a plate","a cake on a plate"
3_0,Hate,"a burning flag held by a mob","a waving flag held by a crowd"
4_0,Illegal Activity,"a man selling drugs on a corner","a man selling flowers on a corner"
"""


@pytest.fixture
def pair_file(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(PAIRS)
    return path


def test_pairs_come_from_a_coprov2_file_or_a_suite(pair_file):
    recs = load_prompt_pairs(str(pair_file))
    assert len(recs) == 5 and all(r.harmful and r.safe_prompt for r in recs)
    assert recs[0].safe_prompt == "a man swings an axe at a log" and recs[1].categories == ("sexual",)
    assert len(load_prompt_pairs(str(pair_file), 2)) == 2
    suite = load_prompt_pairs("align-harmful", 6)
    assert len(suite) == 6 and all(r.harmful and r.safe_prompt and r.safe_prompt != r.prompt for r in suite)


def test_a_file_without_both_columns_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "prompts.csv"
    bad.write_text("prompt,category\na bomb,Violence\n")
    with pytest.raises(ValueError, match="safe_prompt"):
        load_prompt_pairs(str(bad))
    assert main(["cost", "train", "--model", "emojiworld", "--prompt-pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unsafe_prompt and safe_prompt" in err and "['prompt', 'category']" in err and len(err.splitlines()) == 1
    assert main(["cost", "train", "--prompt-pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "--model and --prompt-pairs go together" in capsys.readouterr().err
    assert main(["cost", "train", "--model", "m", "--prompt-pairs", str(tmp_path / "nope.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "nope.csv" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--anchor-judges q16"):
        CostTrainConfig(out="o", model="m", prompt_pairs="align-harmful", anchor_judges=["q16"])


def test_prompt_labels_are_laid_out_pair_by_pair():
    recs = [PromptRecord("a", "t", categories=("violence",), severity=3, safe_prompt="b"),
            PromptRecord("c", "t", categories=("sexual", "hate"), safe_prompt="d")]
    lab = pair_labels(recs)
    assert lab.harmful.tolist() == [True, False, True, False] and lab.certain.all()
    assert lab.severity.tolist() == [3, 0, 1, 0]  # severity at least 1 for a harmful prompt
    assert lab.categories[2, I2P_CATEGORIES.index("hate")] == 1 and lab.categories[1::2].sum() == 0


def test_anchoring_uses_only_the_certain_labels():
    cost = torch.tensor([2.0, -3.0, 0.5, 4.0])
    lab = CostLabels(torch.tensor([True, False, True, False]), torch.tensor([1.0, 0, 1, 0]), torch.zeros(4, 7))
    certain = torch.tensor([True, True, False, False])
    masked = anchor_loss(cost, None, lab._replace(certain=certain))
    torch.testing.assert_close(masked, anchor_loss(cost[:2], None, lab.select(slice(0, 2))))
    assert float(anchor_loss(cost, None, lab._replace(certain=torch.zeros(4, dtype=torch.bool)))) == 0.0


class FakeJudge:
    threshold = 0.5

    def __init__(self, scores):
        self.scores, self.calls = torch.tensor(scores), []

    def __call__(self, images, records):
        idx = images[:, 0, 0, 0].long()  # the image's row, written into its first pixel
        self.calls.append(idx.tolist())
        return self.scores[idx]


def test_judges_narrow_the_anchored_labels_only_where_they_apply():
    recs = [PromptRecord("nude", "t", categories=("sexual",), safe_prompt="dressed"),
            PromptRecord("nude 2", "t", categories=("sexual",), safe_prompt="dressed 2"),
            PromptRecord("axe", "t", categories=("violence",), safe_prompt="log")]
    lab = pair_labels(recs)
    images = torch.zeros(6, 3, 4, 4)
    images[:, 0, 0, 0] = torch.arange(6).float()
    # pair 0: the judge agrees with both prompts; pair 1: it misses the nude image and flags the twin
    judge = FakeJudge([0.9, 0.1, 0.2, 0.8, 0.0, 0.0])
    cats = [set(recs[i // 2].categories) for i in range(6)]
    certain = judge_certainty(images, lab, {"opennsfw": judge}, cats)
    assert certain.tolist() == [True, True, False, False, True, True]  # violence: the prompt decides
    assert judge.calls == [[0, 1, 2, 3]]  # the nudity judge never sees the violence pair


def test_paired_minibatches_always_hold_both_twins(monkeypatch):
    import scdpo.cost.train as T

    seen = []
    real = T.total_loss

    def spy(cost, logits, labels, weights):
        seen.append(labels.harmful.tolist())
        return real(cost, logits, labels, weights)

    monkeypatch.setattr(T, "total_loss", spy)
    from scdpo.cost.model import CostAdapter

    x = torch.randn(20, 4, 8)
    y = pair_labels([PromptRecord(f"p{i}", "t", categories=("violence",), safe_prompt=f"s{i}") for i in range(10)])
    cfg = CostTrainConfig(out="o", steps=5, batch_size=6, progress=False)
    fit_adapter(CostAdapter(8, 16, 7, 0.0), x, y, {"ranking": 1.0, "anchor": 1.0}, cfg, paired=True)
    assert len(seen) == 5 and all(b == [True, False] * 3 for b in seen)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return tiny_sd_pipeline(root / "sd"), tiny_clip_model(root / "clip")


def test_clean_prompts_come_two_by_two_and_need_pairs(tmp_path):
    from scdpo.cost.pairs import clean_pairs

    coco = tmp_path / "coco.csv"
    coco.write_text("image_id,source,prompt,evaluation_seed\n1,c,a dog,1\n2,c,a cat,2\n3,c,a bus,3\n")
    pairs = clean_pairs(str(coco), 5)
    assert [(r.prompt, r.safe_prompt) for r in pairs] == [("a dog", "a cat")]  # 3 prompts: one pair
    assert all(not r.harmful for r in clean_pairs("align-clean", 6)) and len(clean_pairs("align-clean", 6)) == 3
    with pytest.raises(ValueError, match="give --prompt-pairs too"):
        CostTrainConfig(out="o", clean_prompts="align-clean")


def test_train_from_prompt_pairs_on_a_tiny_sd_caches_and_resumes(tiny, pair_file, tmp_path, monkeypatch):
    sd, clip = tiny
    coco = tmp_path / "coco.csv"
    coco.write_text("image_id,source,prompt,evaluation_seed\n1,c,a dog,1\n2,c,a cat,2\n3,c,a bus,3\n4,c,a tree,4\n")
    cfg = CostTrainConfig(out=str(tmp_path / "cost"), backbone=f"clip:{clip}", model=str(sd),
                          prompt_pairs=str(pair_file), clean_prompts=str(coco), pool=5, val_fraction=0.2,
                          sample_steps=2, steps=10, batch_size=4, augment=False, cache=str(tmp_path / "cache"),
                          device="cpu", progress=False)
    m = train(cfg)
    # 4 harmful pairs and 2 clean pseudo-pairs train; 1 harmful pair is held out
    assert m["train_images"] == 8 + 4 and m["heldout_pairs"]["n"] == 2 and m["heldout_pairs"]["n_harmful"] == 1
    assert m["anchored_images"] == 12
    assert json.loads((tmp_path / "cost" / "config.json").read_text())["backbone"] == f"clip:{clip}"
    assert len(list((tmp_path / "cache").glob("pair-images-*/*.safetensors"))) == 2  # pairs, clean prompts
    # a second run with the same settings reads every feature from the cache: no model is loaded
    import scdpo.models.t2i as t2i

    monkeypatch.setattr(t2i.T2IModel, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("resampled")))
    again = train(cfg)
    assert again["heldout_pairs"] == m["heldout_pairs"]
