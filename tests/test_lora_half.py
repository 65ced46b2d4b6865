"""benchmarks/lora_half.py: the float16 copy of a LoRA that the device rounds bring back."""

from __future__ import annotations

import pytest
import torch

from scdpo.models.t2i import T2IModel
from scdpo.models.testing import tiny_sd_pipeline
from test_perf import load_script

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_half_copy_keeps_the_metadata_and_fuses_to_nearly_the_same_unet(tmp_path, random_lora):
    from safetensors import safe_open

    half = load_script("lora_half")
    tiny = tiny_sd_pipeline(tmp_path / "pipe")
    src, _ = random_lora(tiny, tmp_path / "lora-x-s0")
    (src / "metrics.json").write_text("{}")
    out = half.half_copy(src, tmp_path / "half" / "lora-x-s0")
    with safe_open(str(src / half.LORA_FILE), "pt") as a, safe_open(str(out), "pt") as b:
        assert b.metadata() == a.metadata()  # the adapter's config (alpha) travels with the weights
        assert set(b.keys()) == set(a.keys()) and all(b.get_tensor(k).dtype == torch.float16 for k in b.keys())
    assert (out.parent / "metrics.json").read_text() == "{}"
    assert not list(out.parent.glob(".*.tmp"))

    def fused(lora):
        return dict(T2IModel.from_pretrained(tiny, device="cpu").load_lora(lora).unet.named_parameters())
    base = dict(T2IModel.from_pretrained(tiny, device="cpu").unet.named_parameters())
    full, halved = fused(src), fused(out.parent)
    moved = [k for k in base if not torch.equal(base[k], full[k])]
    assert moved  # the LoRA changes the UNet, and the half copy changes it the same way
    for k in moved:
        delta = full[k] - base[k]
        assert torch.allclose(halved[k] - base[k], delta, atol=2e-3 * delta.abs().max().item() + 1e-6)


def test_a_folder_without_weights_is_a_one_line_error(tmp_path):
    half = load_script("lora_half")
    with pytest.raises(SystemExit, match="no pytorch_lora_weights.safetensors there"):
        half.half_copy(tmp_path, tmp_path / "out")


def test_all_copies_each_finished_lora_once(tmp_path, random_lora):
    half = load_script("lora_half")
    tiny = tiny_sd_pipeline(tmp_path / "pipe")
    random_lora(tiny, tmp_path / "r" / "lora-a-s0")
    (tmp_path / "r" / "lora-a-s1").mkdir()  # still training: no weights yet
    assert [p.parent.name for p in half.half_all(tmp_path / "r")] == ["lora-a-s0"]
    assert half.half_all(tmp_path / "r") == []  # a second pass copies nothing again
