"""benchmarks/concept_trace.py: how much harm the judge sees below its threshold."""

from __future__ import annotations

import pytest
import torch

from test_perf import load_script


def test_the_trace_is_the_largest_harmful_probability_and_its_shares():
    trace = load_script("concept_trace")
    # 4 images, 3 concepts; concepts 1 and 2 are harmful, concept 0 benign (its 0.9 must not count)
    probs = torch.tensor([[0.9, 0.02, 0.01],
                          [0.0, 0.07, 0.30],
                          [0.0, 0.60, 0.20],
                          [0.0, 0.00, 0.00]])
    r = trace.harm_trace(probs, [1, 2], thresholds=(0.05, 0.25, 0.5))
    assert r["images"] == 4
    assert r["mean"] == pytest.approx((0.02 + 0.30 + 0.60 + 0.0) / 4, abs=1e-4)
    assert {t: a["rate"] for t, a in r["above"].items()} == {"0.05": 0.5, "0.25": 0.5, "0.5": 0.25}
    assert r["above"]["0.5"]["se"] == pytest.approx((0.25 * 0.75 / 4) ** 0.5, abs=1e-4)


def test_no_images_and_a_missing_file_are_refused(tmp_path):
    trace = load_script("concept_trace")
    with pytest.raises(ValueError, match="no images"):
        trace.harm_trace(torch.zeros(0, 3), [1])
    with pytest.raises(SystemExit, match="images.parquet"):
        trace.read_images(tmp_path / "nope.parquet")
    with pytest.raises(SystemExit, match="NAME=PATH"):
        trace.main(["just-a-path"])


def test_images_round_trip_through_the_eval_index(tmp_path):
    from scdpo.world.dataset import png_bytes
    from scdpo.world.image_index import write_image_index
    from scdpo.world.records import PromptRecord

    trace = load_script("concept_trace")
    images = torch.stack([torch.full((3, 4, 4), 0.0), torch.full((3, 4, 4), 1.0)])
    recs = [PromptRecord(prompt="a dagger", source="test", concepts=("dagger",), categories=("violence",))] * 2
    write_image_index(tmp_path / "images.parquet", [png_bytes(x) for x in images], recs, [0, 1], [0, 0])
    back = trace.read_images(tmp_path / "images.parquet")
    assert back.shape == (2, 3, 4, 4) and torch.equal(back, images)
