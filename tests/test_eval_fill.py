"""`scdpo eval --fill-batches`: the suites sampled in the sampler's full batches, each suite handed out as
soon as its last image is in, with the images of its own samples, in order."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.cli import main
from scdpo.eval.run import sampled_suites
from scdpo.models.sampler_config import SamplerConfig
from scdpo.models.testing import tiny_sd_pipeline
from scdpo.world.records import PromptRecord

pytestmark = pytest.mark.usefixtures("one_thread")


class SeedModel:
    """A fake T2IModel on the CPU: each image is filled with its seed, and every sample() call is recorded."""

    vae_scale_factor, resolution = 2, 8

    def __init__(self):
        self.device, self.calls = torch.device("cpu"), []

    def sample(self, prompts, seeds, config):
        self.calls.append(len(prompts))
        return torch.tensor(seeds, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).clone()


def _plan(sizes: dict[str, int]) -> list[tuple[str, list]]:
    seed = iter(range(10_000))
    return [(name, [(i, 0, next(seed), PromptRecord(prompt=f"{name} {i}", source="test")) for i in range(n)])
            for name, n in sizes.items()]


@pytest.mark.parametrize("fill", [False, True])
def test_each_suite_gets_its_own_images_in_order(fill):
    model, plan = SeedModel(), _plan({"a": 5, "b": 3, "empty": 0, "c": 6})
    out = list(sampled_suites(model, plan, SamplerConfig(batch_size=4), fill=fill))
    assert [name for name, *_ in out] == ["a", "b", "empty", "c"]
    for (name, samples), (got, got_samples, images) in zip(plan, out):
        assert got_samples is samples and images.shape == (len(samples), 3, 8, 8)
        assert images[:, 0, 0, 0].tolist() == [float(s) for _, _, s, _ in samples]
    # one call a suite (the empty one too), or the 14 images in full batches of 4, the empty suite's call once b is out
    assert model.calls == ([5, 3, 0, 6] if not fill else [4, 4, 0, 4, 2])


def test_fill_hands_a_suite_out_as_soon_as_its_last_image_is_in():
    model, plan = SeedModel(), _plan({"a": 3, "b": 2, "c": 4})
    stream = sampled_suites(model, plan, SamplerConfig(batch_size=4), fill=True)
    assert next(stream)[0] == "a" and model.calls == [4]  # a's 3 and one of b's
    assert next(stream)[0] == "b" and model.calls == [4, 4]
    assert next(stream)[0] == "c" and model.calls == [4, 4, 1]
    assert next(stream, None) is None


def test_the_batch_is_the_samplers_own_pick():
    """Unset, the batch is auto_batch's for the model's latents: 64 on the CPU (a CUDA GPU's 1,024 for small
    latents is auto_batch's own test)."""
    model, plan = SeedModel(), _plan({"a": 70, "b": 70})
    list(sampled_suites(model, plan, SamplerConfig(), fill=True))
    assert model.calls == [64, 64, 12]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


def test_the_flag_reaches_metrics_and_the_numbers_stay(tiny, tmp_path):
    def run(out, *flags):
        assert main(["eval", "--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain",
                     "emojiworld", "--steps", "1", "--limit", "3", "--batch-size", "4", "--device", "cpu",
                     "--no-frechet", "--no-overlap", *flags, "--out", str(out)]) == 0
        return json.loads((out / "metrics.json").read_text())

    on, off, unset = run(tmp_path / "on", "--fill-batches"), run(tmp_path / "off", "--no-fill-batches"), \
        run(tmp_path / "unset")
    assert on["config"]["fill_batches"] is True and off["config"]["fill_batches"] is unset["config"]["fill_batches"] \
        is False
    for key in ("harmful_rate", "alignment", "prompts"):
        assert [s.get(key) for s in on["suites"].values()] == [s.get(key) for s in off["suites"].values()]


def test_a_real_eval_samples_in_full_batches_with_the_flag(tiny, tmp_path, monkeypatch):
    from scdpo.eval import run as run_module

    calls = []
    real = run_module.sample_all
    monkeypatch.setattr(run_module, "sample_all",
                        lambda model, samples, *a, **k: calls.append(len(samples)) or real(model, samples, *a, **k))
    assert main(["eval", "--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain",
                 "emojiworld", "--steps", "1", "--limit", "3", "--batch-size", "4", "--device", "cpu", "--no-frechet",
                 "--no-overlap", "--fill-batches", "--out", str(tmp_path / "e")]) == 0
    assert calls == [4, 2]  # 3 + 3 images in batches of 4, not one call a suite
