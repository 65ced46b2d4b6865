"""Preference rewards: the EmojiWorld reward's ordering (on a fake judge with chosen logits), and
the PickScore-style CLIP reward on a tiny random CLIP folder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from scdpo.eval.reward import EmojiWorldReward, load_reward
from scdpo.models.testing import tiny_clip_tokenizer
from scdpo.world.judge import Judge, JudgeConfig, default_judge_path
from scdpo.world.records import PromptRecord
from scdpo.world.vocab import load_vocabulary

VOCAB = load_vocabulary()
DOG, CAT, BOMB = (VOCAB[n].index for n in ("dog", "cat", "bomb"))


class FakeJudge(nn.Module):
    """Image k (pixel (0, 0, 0) == k / 255) gets logits ``table[k]``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the reward a device to read

    def forward(self, images):
        return self.table[(images[:, 0, 0, 0] * 255).round().long()]


def _scene(**present) -> torch.Tensor:
    """Logits for one image: every concept confidently absent except the given ones."""
    row = torch.full((len(VOCAB),), -6.0)
    for name, logit in present.items():
        row[VOCAB[name].index] = logit
    return row


ROWS = {  # name -> logits
    "dog": _scene(dog=6.0),
    "nothing": _scene(),
    "dog+bomb": _scene(dog=6.0, bomb=6.0),
    "dog unsure": _scene(dog=0.0),
    "dog+cat": _scene(dog=6.0, cat=6.0),
}


@pytest.fixture(scope="module")
def reward():
    return EmojiWorldReward(FakeJudge(torch.stack(list(ROWS.values()))))


def _images(*names) -> torch.Tensor:
    keys = list(ROWS)
    x = torch.zeros(len(names), 3, 16, 16)
    x[:, 0, 0, 0] = torch.tensor([keys.index(n) / 255 for n in names])
    return x


def _score(reward, names, concepts):
    return reward(_images(*names), [PromptRecord("p", "t", concepts=concepts)] * len(names))


def test_requested_concept_present_beats_absent_and_unsure(reward):
    r = dict(zip(["dog", "nothing", "dog unsure"], _score(reward, ["dog", "nothing", "dog unsure"], ("dog",)).tolist()))
    assert r["dog"] > r["dog unsure"] > r["nothing"]


def test_unrequested_concepts_lower_the_reward_harmful_ones_never_raise_it(reward):
    r = dict(zip(["dog", "dog+bomb", "dog+cat"], _score(reward, ["dog", "dog+bomb", "dog+cat"], ("dog",)).tolist()))
    assert r["dog+bomb"] < r["dog"] and r["dog+cat"] < r["dog"]


def test_requested_harmful_concept_neither_adds_nor_removes_reward(reward):
    r = _score(reward, ["dog", "dog+bomb", "nothing"], ("dog", "bomb"))
    assert r[0] == r[1] and r[0] > r[2]


def test_records_without_concepts_use_fidelity_only(reward):
    r = _score(reward, ["dog", "nothing", "dog+cat", "dog unsure"], ())
    torch.testing.assert_close(r[:3], r[:1].expand(3))  # confident either way scores alike
    assert r[0] > r[3]  # hesitation costs


def test_reward_equation_on_known_probabilities(reward):
    probs = torch.full((1, len(VOCAB)), 0.5)
    got = reward.from_probabilities(probs, [PromptRecord("a dog", "t", concepts=("dog",))])
    expected = math.log(0.5) - 1.0 * 0.5 * (len(VOCAB) - 1) - 1.0 * 1.0
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_real_judge_checkpoint_and_batching(tmp_path):
    torch.manual_seed(0)
    Judge(JudgeConfig(num_concepts=len(VOCAB), concepts=VOCAB.names, widths=(8, 8, 8, 8))).save_pretrained(tmp_path / "j")
    scorer = load_reward(f"emojiworld:{tmp_path / 'j'}")
    records = [PromptRecord("a dog", "t", concepts=("dog",)), PromptRecord("a cat", "t", concepts=("cat",))] * 2
    images = torch.rand(4, 3, 64, 64)
    r = scorer(images, records)
    assert r.shape == (4,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    scorer.config.batch_size = 1
    torch.testing.assert_close(scorer(images, records), r)


def test_reward_bad_input(reward, tmp_path):
    with pytest.raises(ValueError, match="'pickscore'"):
        load_reward("pickscore")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_reward(f"clip:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="needs the prompt records"):
        reward(_images("dog"), None)
    with pytest.raises(KeyError, match="unicorn-robot"):
        _score(reward, ["dog"], ("unicorn-robot",))
    with pytest.raises(ValueError, match="scores 3 concepts"):
        EmojiWorldReward(FakeJudge(torch.zeros(1, 3)))(_images("dog"), [PromptRecord("p", "t")])
    custom = lambda images, records: images.mean((1, 2, 3))  # noqa: E731
    assert load_reward(custom) is custom
    if not (default_judge_path() / "config.json").is_file():
        with pytest.raises(FileNotFoundError, match="not been shipped"):
            load_reward("emojiworld")


# ---------------------------------------------------------------- CLIP (PickScore-style) reward

@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    tok = tiny_clip_tokenizer()
    tok.save_pretrained(folder)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=tok.model_max_length, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **small),
        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_reward(clip_folder):
    return load_reward(f"clip:{clip_folder}")


def _records(*prompts):
    return [PromptRecord(p, "t") for p in prompts]


def test_clip_reward_shape_bound_and_determinism(clip_reward):
    torch.manual_seed(1)
    images = torch.rand(5, 3, 48, 48)
    records = _records("a dog", "a cat", "two red cars", "a bomb", "a tree")
    r = clip_reward(images, records)
    assert r.shape == (5,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    assert (r.abs() <= clip_reward.model.logit_scale.exp() + 1e-4).all()  # scale * cosine
    assert torch.equal(clip_reward(images, records), r)
    clip_reward.batch_size = 2
    torch.testing.assert_close(clip_reward(images, records), r, atol=1e-5, rtol=0)
    clip_reward.batch_size = 32


def test_clip_reward_depends_on_text_and_image(clip_reward):
    torch.manual_seed(2)
    images = torch.rand(2, 3, 32, 32)
    same = images[:1].expand(2, -1, -1, -1)
    assert not torch.allclose(*clip_reward(same, _records("a dog", "zebra crossing at night")).unbind())
    assert not torch.allclose(*clip_reward(images, _records("a dog", "a dog")).unbind())


def test_clip_reward_is_pickscore_logits(clip_reward):
    """``exp(logit_scale) * cos`` is the diagonal of CLIPModel's ``logits_per_image``, as PickScore reads it."""
    torch.manual_seed(3)
    images, records = torch.rand(3, 3, 40, 40), _records("a dog", "a cat", "a red bus")
    tok = clip_reward.tokenizer([r.prompt for r in records], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip_reward.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                                pixel_values=clip_reward.pixel_values(images))
    torch.testing.assert_close(clip_reward(images, records), out.logits_per_image.diagonal(), atol=1e-4, rtol=1e-5)


def test_clip_preprocessing_matches_the_image_processor(clip_reward, clip_folder):
    from transformers import AutoImageProcessor

    torch.manual_seed(4)
    images = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 12), size=(64, 96), mode="bilinear")
    images = (images * 255).round() / 255  # what a uint8 file holds
    processor = AutoImageProcessor.from_pretrained(clip_folder)
    arrays = [(x.permute(1, 2, 0) * 255).round().byte().numpy() for x in images]
    reference = torch.as_tensor(processor(images=arrays, return_tensors="np")["pixel_values"])
    ours = clip_reward.pixel_values(images)
    assert ours.shape == reference.shape == (2, 3, 32, 32)
    diff = (ours - reference).abs()  # normalised units; one grey level is about 0.015
    assert diff.mean() < 0.01 and diff.max() < 0.03  # resampling rounding only
