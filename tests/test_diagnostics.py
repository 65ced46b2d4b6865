"""The issue-15 diagnostics of benchmarks/ (docs/results.md, "Thirteenth round"): a LoRA on the
prompt's branch of guidance only (cond_only_lora.py) and the LoRA's change per branch
(uncond_shift.py), on the tiny SD pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from scdpo.models import testing
from scdpo.models.t2i import T2IModel
from scdpo.train import model as tm
from scdpo.train.config import LORA_TARGETS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if str(ROOT / "benchmarks") not in sys.path:  # as when the scripts run: their helpers beside them
        sys.path.insert(0, str(ROOT / "benchmarks"))
    path = testing.tiny_sd_pipeline(tmp_path_factory.mktemp("pipe") / "sd")
    base = T2IModel.from_pretrained(path, device="cpu")
    torch.manual_seed(0)
    lora = T2IModel.from_pretrained(path, device="cpu")
    tm.add_lora(lora.unet, 4, 8.0, LORA_TARGETS)
    with torch.no_grad():  # a LoRA that changes something
        for n, p in lora.unet.named_parameters():
            if "lora_B" in n:
                p.add_(0.2 * torch.randn_like(p))
    return base, lora


def test_cond_only_takes_the_unconditional_half_from_the_base(pair):
    from cond_only_lora import cond_only

    base, lora = pair
    x = torch.randn(4, base.latent_channels, 8, 8)
    t = torch.tensor(500)
    cond = type(base.unconditional(2)).cat([base.unconditional(2), base.encode_prompts(["a red cat", "a dog"])])
    with torch.no_grad():
        plain = lora.predict(x, t, cond)
        try:
            got = cond_only(lora, base).predict(x, t, cond)
        finally:
            del lora.predict  # the wrapper is an instance attribute: back to the class's method
        torch.testing.assert_close(got[:2], base.predict(x[:2], t, type(cond)(cond.context[:2])))
    torch.testing.assert_close(got[2:], plain[2:])
    assert not torch.allclose(got[:2], plain[:2])  # the LoRA did change the unconditional half


def test_uncond_shift_is_zero_for_the_base_and_not_for_a_lora(pair):
    from uncond_shift import shift

    base, lora = pair
    same = shift(base, base, ["a red cat", "a dog"], steps=3, w=5.0, seed=0)
    assert all(band["|dg|/|g|"] == 0.0 for band in same.values())
    moved = shift(base, lora, ["a red cat", "a dog"], steps=3, w=5.0, seed=0)
    assert all(band["|dg|/|g|"] > 0 and band["du/dc"] > 0 for band in moved.values())
