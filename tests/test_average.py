"""`scdpo train average`: one LoRA whose change is the weighted mean of several (the seeds' soup)."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.models.t2i import T2IModel
from scdpo.models.testing import tiny_sd_pipeline
from scdpo.train.average import LORA_FILE, average_loras

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two(tmp_path_factory, random_lora):
    root = tmp_path_factory.mktemp("avg")
    tiny = tiny_sd_pipeline(root / "pipe")
    a, _ = random_lora(tiny, root / "a", rank=4, alpha=8.0, seed=0)
    b, _ = random_lora(tiny, root / "b", rank=2, alpha=1.0, seed=1)  # another rank and scale
    return tiny, a, b, root


def _unet(tiny, *loras):
    model = T2IModel.from_pretrained(tiny, device="cpu")
    for path, scale in loras:
        model.load_lora(path, scale)  # diffusers' load_lora_weights + fuse_lora: fusing adds
    return dict(model.unet.named_parameters())


@pytest.mark.parametrize("weights", [None, [0.25, 1.5]])
def test_the_average_fuses_to_the_weighted_mean_of_the_changes(two, weights):
    tiny, a, b, root = two
    out = root / f"soup-{weights}"
    average_loras([a, b], out, weights)
    w = weights or [0.5, 0.5]
    expected, got = _unet(tiny, (a, w[0]), (b, w[1])), _unet(tiny, (out, 1.0))
    base = _unet(tiny)
    moved = [k for k in base if not torch.equal(base[k], expected[k])]
    assert moved
    for k in moved:
        torch.testing.assert_close(got[k], expected[k], atol=1e-5, rtol=1e-5)
    assert json.loads((out / "average.json").read_text())["rank"] == 6  # 4 + 2: exact, nothing truncated
    assert not list(out.glob(".*.tmp"))


def test_bad_inputs_are_one_line_errors(two, tmp_path):
    tiny, a, b, _ = two
    with pytest.raises(SystemExit, match="at least two"):
        average_loras([a], tmp_path / "x")
    with pytest.raises(SystemExit, match="one each"):
        average_loras([a, b], tmp_path / "x", [1.0])
    with pytest.raises(SystemExit, match=f"{tmp_path / 'none'}: no {LORA_FILE}"):
        average_loras([a, tmp_path / "none"], tmp_path / "x")


def test_the_command_writes_a_loadable_lora(two, tmp_path):
    from scdpo.cli import main

    tiny, a, b, _ = two
    main(["train", "average", str(a), str(b), "--out", str(tmp_path / "soup")])
    assert (tmp_path / "soup" / LORA_FILE).stat().st_mode & 0o044  # readable like a trained LoRA
    T2IModel.from_pretrained(tiny, device="cpu").load_lora(tmp_path / "soup")
