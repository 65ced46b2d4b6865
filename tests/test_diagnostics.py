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


@pytest.mark.parametrize("flags, rank, alpha", [([], 8, 8.0), (["--lora-rank", "32"], 32, 32.0),
                                                (["--lora-rank", "32", "--lora-alpha", "8"], 32, 8.0)])
def test_anchor_probe_passes_rank_and_alpha_to_the_trainer(tmp_path, monkeypatch, flags, rank, alpha):
    """anchor_probe.py --lora-rank/--lora-alpha (fourteenth round): alpha defaults to the rank, as in
    every GPU round, and an explicit alpha is kept, so "rank 32 at a fixed scale" is what trains."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import anchor_probe

    import scdpo.train.trainer as trainer
    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(anchor_probe, "anchor_only_pairs", lambda path, n, n_clean=0: path)
    monkeypatch.setattr(anchor_probe, "judge_suites", lambda lora, n: [])
    monkeypatch.setattr(sys, "argv", ["anchor_probe.py", "--out", str(tmp_path / "p"), "--preserve-weight", "20", *flags])
    anchor_probe.main()
    cfg = seen["cfg"]
    assert (cfg.lora_rank, cfg.lora_alpha) == (rank, alpha)
    assert cfg.preserve_weight == 20 and cfg.anchor_target_word is None
