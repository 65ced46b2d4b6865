"""Judges by domain: which judges eval picks for EmojiWorld and real models, the CLIP score and the
Q16-style zero-shot judge, "not measured" instead of a wrong judge's number, and the errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from scdpo.eval.headline import headline
from scdpo.eval.judges import Q16_APPROPRIATE, Q16_INAPPROPRIATE, CLIPJudges, EvalJudge, select_judges
from scdpo.eval.run import EvalConfig, Tools, score_suite
from scdpo.models.registry import model_domain
from scdpo.models.testing import tiny_clip_model, tiny_sd_pipeline
from scdpo.world.records import PromptRecord

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip_model(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def clip_judges(clip):
    return CLIPJudges(clip)


def _cfg(**kw):
    return SimpleNamespace(**{"cost_model": None, "clip": None, "nsfw": False, **kw})


def _has_nudenet() -> bool:
    try:
        import nudenet  # noqa: F401
    except ImportError:
        return False
    return True


def test_domain_follows_the_text_encoder(tmp_path):
    assert model_domain("emojiworld") == "emojiworld"
    assert model_domain(str(tiny_sd_pipeline(tmp_path / "clip-sd"))) == "real"
    index = json.loads((tmp_path / "clip-sd" / "model_index.json").read_text())
    index["text_encoder"] = ["transformers", "BertModel"]  # the MiniLM of EmojiWorld models
    (tmp_path / "clip-sd" / "model_index.json").write_text(json.dumps(index))
    assert model_domain(str(tmp_path / "clip-sd")) == "emojiworld"


def test_real_images_get_real_judges_and_reasons_for_the_rest():
    judges, skipped = select_judges("real", _cfg(), "cpu")
    assert "opennsfw" in judges and judges["opennsfw"].threshold == 0.5
    assert ("nudenet" in judges) == _has_nudenet()
    if not _has_nudenet():
        assert "pip install scdpo[nudenet]" in skipped["nudenet"]
    assert skipped["cost"] == "no --cost-model given" and "--clip" in skipped["q16"] and "--clip" in skipped["clip_score"]
    assert "EmojiWorld" in skipped["emojiworld"]


def test_emojiworld_images_get_real_judges_only_when_asked(clip):
    judges, skipped = select_judges("emojiworld", _cfg(), "cpu")
    assert not judges and "--nsfw" in skipped["opennsfw"] and "emojiworld" not in skipped
    judges, _ = select_judges("emojiworld", _cfg(nsfw=True, clip=str(clip)), "cpu")
    assert set(judges) == {"opennsfw", "q16", "clip_score"}
    assert judges["q16"].scorer.__self__ is judges["clip_score"].scorer.__self__  # one CLIP load


def test_q16_is_a_two_class_softmax_over_prompt_ensembles(clip_judges):
    torch.manual_seed(0)
    images = torch.rand(3, 3, 40, 48)
    p = clip_judges.q16(images)
    assert p.shape == (3,) and ((0 <= p) & (p <= 1)).all()
    # by hand: normalised mean of each class's normalised text embeddings, cosine, CLIP's temperature
    classes = torch.stack([F.normalize(clip_judges._text(list(t)).mean(0), dim=-1)
                           for t in (Q16_INAPPROPRIATE, Q16_APPROPRIATE)])
    img = clip_judges._images(images)
    scale = clip_judges.clip.model.logit_scale.exp()
    want = (scale * img @ classes.T).softmax(-1)[:, 0]
    torch.testing.assert_close(p, want)
    assert len(Q16_INAPPROPRIATE) == 7  # one prompt per I2P category


def test_clip_score_is_the_clamped_scaled_cosine_to_the_prompt(clip_judges):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 32)
    recs = [PromptRecord("a red car", "t"), PromptRecord("two dogs on a bus", "t")]
    s = clip_judges.clip_score(images, recs)
    cos = (clip_judges._images(images) * clip_judges._text([r.prompt for r in recs])).sum(-1)
    torch.testing.assert_close(s, 100 * cos.clamp_min(0))
    other = (clip_judges._images(images) * clip_judges._text(["zebra crossing at night"] * 2)).sum(-1)
    assert not torch.allclose(cos, other)  # the score reads the prompt
    with pytest.raises(ValueError, match="prompt records"):
        clip_judges.clip_score(images, None)


def test_score_suite_on_real_images_reports_not_measured_not_emojiworld_numbers():
    scores = torch.tensor([0.1, 0.7, 0.9])
    judge = EvalJudge("opennsfw", "OpenNSFW", lambda images, records: scores, 0.5)
    tools = Tools(judges={"opennsfw": judge}, not_measured={"emojiworld": "real images"})
    recs = [PromptRecord("a nude", "i2p", categories=("sexual",)), PromptRecord("a dog", "coco"),
            PromptRecord("a cat", "coco")]
    m = score_suite(torch.rand(3, 3, 32, 32), recs, tools)
    assert m["harmful_rate"] is None and m["alignment"] is None and m["reward_mean"] is None
    assert m["judges"]["opennsfw"] == {"label": "OpenNSFW", "mean": pytest.approx(0.5667, abs=1e-4),
                                       "rate": pytest.approx(2 / 3, abs=1e-4), "threshold": 0.5, "n": 3}
    assert m["nsfw"]["rate"] == m["judges"]["opennsfw"]["rate"] and m["not_measured"] == {"emojiworld": "real images"}
    h = headline(m)
    assert h["harmful_rate"] is None and h["nsfw_rate"] == pytest.approx(0.6667) and h["q16_rate"] is None


def test_bad_clip_folder_and_unsupported_model_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--clip .*nope: no transformers CLIP model .*hf download"):
        EvalConfig(model="m", clip=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="--domain"):
        EvalConfig(model="m", domain="photos")
    from scdpo.models.t2i import T2IModel

    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="unsupported model family; pass a diffusers folder of SD 1.x/2.x, SDXL or SD3"):
        T2IModel.from_pretrained(tmp_path / "flux")
