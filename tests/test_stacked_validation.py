"""Every --together run's validation grid in one sampler call (stacked.Layout.blocks, Validator.many)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scdpo.models import testing
from scdpo.models.t2i import T2IModel
from scdpo.train import stacked
from scdpo.train.config import LORA_TARGETS
from scdpo.train.validate import Validator, validation_records
from scdpo.world.records import PromptRecord

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]
RUNS = 3


def test_blocks_give_each_run_its_rows_in_every_block():
    """Two blocks of 3 runs x 2 rows (guidance's [uncond; cond]), then padding: each run's adapter on its rows of
    both blocks, W x alone on the padding; one block computes exactly as before (the training step's path)."""
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    a = [torch.randn(2, 6) for _ in range(RUNS)]
    b = [torch.randn(5, 2) for _ in range(RUNS)]  # B != 0: every run's delta shows
    layout = stacked.Layout()
    layer = stacked.StackedLoRA(base, a, b, 0.5, layout)
    x = torch.randn(2 * RUNS * 2 + 3, 7, 6)
    with stacked.rows_per_run(layout, rows=2, blocks=2):
        y = layer(x)
    for block in range(2):
        for k in range(RUNS):
            at = slice(block * RUNS * 2 + 2 * k, block * RUNS * 2 + 2 * (k + 1))
            assert torch.allclose(y[at], base(x[at]) + 0.5 * x[at] @ a[k].T @ b[k].T, atol=1e-5), (block, k)
    assert torch.equal(y[2 * RUNS * 2:], base(x[2 * RUNS * 2:]))
    assert layout.blocks == 1  # restored
    with stacked.rows_per_run(layout, rows=2):  # one block: the arithmetic of before, bit for bit
        one = layer(x)
        head = x[:RUNS * 2].reshape(RUNS, -1, 6)
        delta = head @ torch.stack(a).transpose(-1, -2) @ torch.stack(b).transpose(-1, -2) * 0.5
    assert torch.equal(one[:RUNS * 2], base(x[:RUNS * 2]) + delta.reshape(RUNS * 2, 7, 5))
    with stacked.rows_per_run(layout, rows=2, blocks=3), pytest.raises(ValueError, match="fewer than 3 blocks x 3"):
        layer(x)


@pytest.fixture(scope="module")
def stacked_model(tmp_path_factory):
    """The tiny pipeline with three runs' adapters stacked: different and nonzero (B != 0). Adapters five times
    larger saturate the images, and float32's rounding, amplified over the sampling, then reached 1e-3."""
    pipe = testing.tiny_sd_pipeline(tmp_path_factory.mktemp("stacked-validation") / "sd")
    model = T2IModel.from_pretrained(str(pipe), device="cpu")
    states = [stacked.initial_adapters(model.unet, seed, 4, 8.0, LORA_TARGETS) for seed in range(RUNS)]
    g = torch.Generator().manual_seed(7)
    states = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in s.items()} for s in states]
    layout = stacked.stack(model.unet, states, 4, 8.0, LORA_TARGETS)
    return model, layout


@pytest.fixture
def grids(monkeypatch):
    """The images each grid was written with, by path."""
    import scdpo.utils.grid

    written = {}
    monkeypatch.setattr(scdpo.utils.grid, "save_grid", lambda images, path, **kw: written.__setitem__(path, images))
    return written


class FakeJudge:
    """Presence probabilities that follow each image's brightness: a stand-in for the shipped judge."""

    def probabilities(self, images):
        from scdpo.world.vocab import load_vocabulary

        n = len(load_vocabulary().concepts)
        return torch.sigmoid(20 * (images.mean((1, 2, 3))[:, None] - 0.5) + torch.linspace(-3, 3, n))


@pytest.mark.parametrize("guidance", [5.0, 1.0])  # guided: two blocks of rows ([uncond; cond]); unguided: one
def test_one_call_for_all_runs_gives_each_run_its_own_grid(stacked_model, grids, tmp_path, guidance):
    model, layout = stacked_model
    records = validation_records(None, 2)  # EmojiWorld's harmful and clean prompts: the judge's numbers mean something
    validator = Validator(records, steps=2, use_judge=False, device="cpu")
    validator.config = dataclasses.replace(validator.config, guidance_scale=guidance)
    validator.judge = FakeJudge()
    alone, numbers = [], []
    for k in range(RUNS):
        with stacked.rows_per_run(layout, run=k):
            numbers.append(validator(model, tmp_path / f"alone-{k}.png"))
        alone.append(grids[tmp_path / f"alone-{k}.png"])
    paths = [tmp_path / f"run-{k}" / "final.png" for k in range(RUNS)]
    model.unet.train()
    together = validator.many(model, layout, paths)
    assert model.unet.training and (layout.rows, layout.run, layout.blocks) == (None, None, 1)  # restored
    with stacked.rows_per_run(layout):
        base = validator._images(model, [r.prompt for r in records], list(range(len(records))), validator.config)
    for k in range(RUNS):
        got = grids[paths[k]]
        assert got.shape == alone[k].shape
        assert (got - alone[k]).abs().max() < 1e-4, (k, (got - alone[k]).abs().max())  # the batch: rounding only
        # a mix-up would show: the runs' grids differ from one another and from the base model's
        assert (alone[k] - alone[(k + 1) % RUNS]).abs().max() > 0.01
        assert (alone[k] - base).abs().max() > 0.01
        assert together[k].keys() == numbers[k].keys() and together[k]
        assert together[k] == pytest.approx(numbers[k], abs=1e-4), k


def test_one_call_refuses_what_would_change_the_rows(stacked_model, tmp_path):
    model, layout = stacked_model
    validator = Validator([PromptRecord(prompt="a cat", source="test")], steps=1, use_judge=False, device="cpu")
    paths = [tmp_path / f"{k}.png" for k in range(RUNS)]
    with pytest.raises(ValueError, match="2 grid paths for a UNet holding 3 runs"):
        validator.many(model, layout, paths[:2])
    with pytest.raises(ValueError, match="the layout is not the one"):
        validator.many(model, stacked.Layout(), paths)
    validator.config = dataclasses.replace(validator.config, guard="sld:weak")
    with pytest.raises(ValueError, match="guard 'sld:weak' changes the sampler's rows"):
        validator.many(model, layout, paths)
    assert not any(p.exists() for p in paths)
