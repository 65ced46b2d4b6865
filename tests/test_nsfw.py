"""Real-image judges: OpenNSFW, NudeNet (when installed) and the EmojiWorld harm judge.

The false-positive set is scikit-image's bundled photographs (none NSFW). NudeNet v3 (320n) scores
the synthetic colour wheel 0.83 BUTTOCKS_EXPOSED, the same as when it reads the PNG file itself:
a known false positive, reported in docs/judges-and-rewards.md and tolerated here by name.
"""

from __future__ import annotations

import sys

import pytest
import torch

from scdpo.judges.nsfw import NUDENET_EXPOSED, load_judge, safe_photos
from scdpo.world.judge import Judge, JudgeConfig, default_judge_path
from scdpo.world.vocab import load_vocabulary

KNOWN_FALSE_POSITIVES = {"opennsfw": set(), "nudenet": {"colorwheel"}}


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage")
    return safe_photos(256)


def _judge(name):
    if name == "nudenet":
        pytest.importorskip("nudenet")
    return load_judge(name, "cpu")


@pytest.fixture(scope="module", params=["opennsfw", "nudenet"])
def judge(request):
    return request.param, _judge(request.param)


def test_safe_photos_score_below_threshold(judge, photos):
    name, j = judge
    names, images = photos
    scores = j(images, None)
    assert scores.shape == (len(names),) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert ((scores >= 0) & (scores <= 1)).all()
    flagged = {n for n, s in zip(names, scores.tolist()) if s >= j.threshold}
    assert flagged == KNOWN_FALSE_POSITIVES[name], dict(zip(names, scores.tolist()))


def test_score_does_not_depend_on_the_batch(judge, photos):
    _, j = judge
    images = photos[1][:5]
    together = j(images, None)
    alone = torch.cat([j(images[i:i + 1], None) for i in range(len(images))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert torch.equal(j(images, None), together)  # deterministic


def test_any_size_and_empty_batch(judge, photos):
    _, j = judge
    small = torch.nn.functional.interpolate(photos[1][:2], size=(64, 48), mode="area")
    assert j(small, None).shape == (2,)
    assert j(torch.zeros(0, 3, 64, 64), None).shape == (0,)


@pytest.mark.parametrize("bad", [torch.zeros(2, 4, 8, 8), torch.zeros(3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8)])
def test_bad_images_rejected(bad):
    with pytest.raises(ValueError, match="expected"):
        _judge("opennsfw")(bad, None)


def test_records_must_match_images():
    from scdpo.world.records import PromptRecord

    with pytest.raises(ValueError, match="2 images for 1 prompt records"):
        _judge("opennsfw")(torch.zeros(2, 3, 8, 8), [PromptRecord("a cat", "t")])


def test_nudenet_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet -> ImportError
    with pytest.raises(ImportError, match=r"pip install scdpo\[nudenet\]"):
        load_judge("nudenet")


def test_nudenet_is_not_imported_with_the_module():
    import subprocess

    code = "import sys, scdpo.judges.nsfw, scdpo.eval.reward; print('nudenet' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_nudenet_exposed_classes_are_nudenet_labels():
    nudenet = pytest.importorskip("nudenet.nudenet")
    labels = set(getattr(nudenet, "__labels"))
    assert set(NUDENET_EXPOSED) <= labels and all(c.endswith("_EXPOSED") for c in NUDENET_EXPOSED)


def test_emojiworld_judge_is_max_harmful_probability(tmp_path):
    vocab = load_vocabulary()
    torch.manual_seed(0)
    net = Judge(JudgeConfig(num_concepts=len(vocab), concepts=vocab.names, widths=(8, 8, 8, 8)))
    net.save_pretrained(tmp_path / "judge")
    j = load_judge(f"emojiworld:{tmp_path / 'judge'}")
    images = torch.rand(3, 3, 64, 64)
    scores = j(images, None)
    probs = Judge.from_pretrained(tmp_path / "judge").probabilities(images)
    harmful = [c.index for c in vocab.harmful]
    torch.testing.assert_close(scores, probs[:, harmful].amax(1))
    assert j.threshold == 0.5


def test_unknown_judge_and_unshipped_default():
    with pytest.raises(ValueError, match="'q16'"):
        load_judge("q16")
    if (default_judge_path() / "config.json").is_file():
        pytest.skip("the EmojiWorld judge is shipped in this install")
    with pytest.raises(FileNotFoundError, match="not been shipped"):
        load_judge("emojiworld")
