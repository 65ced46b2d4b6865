"""The Frechet reference's cache (scdpo.utils.tensor_cache, scdpo.eval.run.reference_features): computed
once per distinct reference, read back bit for bit after, never stale, never half-written; `scdpo eval`
with and without it writes the same metrics."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.cli import main
from scdpo.models.testing import tiny_sd_pipeline
from scdpo.utils.tensor_cache import cached_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyBackbone(torch.nn.Module):
    """A stand-in for EfficientNet: mean colour and brightness as 4 features."""

    spec = "tiny"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def fingerprint(self) -> float:
        return float(self.w.detach().abs().sum())

    def features(self, images, batch_size=64):
        x = images.float()
        return torch.cat([x.mean((2, 3)), x.mean((1, 2, 3))[:, None]], 1) * self.w.detach()


def _records(n=6):
    from scdpo.world.suites import get_suite

    return get_suite("eval-clean", n=n)


def test_computed_once_then_read_back(tmp_path, monkeypatch):
    import scdpo.eval.frechet as frechet
    from scdpo.eval.run import reference_features

    calls, real = [], frechet.frechet_features
    monkeypatch.setattr(frechet, "frechet_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    net, recs = TinyBackbone(), _records()
    first = reference_features(recs, 16, net, tmp_path)
    again = reference_features(recs, 16, net, tmp_path)
    assert len(calls) == 1 and torch.equal(first, again) and first.shape == (6, 4)
    assert torch.equal(first, reference_features(recs, 16, net))  # no cache: the same numbers
    # every input that changes the features is a new entry: the scenes, the size, the weights
    reference_features(recs[:5], 16, net, tmp_path)
    reference_features(recs, 24, net, tmp_path)
    with torch.no_grad():
        net.w.mul_(2)
    assert torch.equal(reference_features(recs, 16, net, tmp_path), 2 * first)
    assert len(calls) == 5 and len(list(tmp_path.glob("reference-*.safetensors"))) == 4
    assert reference_features([], 16, net, tmp_path) is None  # prompt files without scenes: no reference


def test_a_changed_photo_is_a_new_entry(tmp_path):
    from scdpo.eval.run import reference_key

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x" * 10)
    net = TinyBackbone()
    before = reference_key(str(folder), 16, net)
    assert reference_key(str(folder), 16, net) == before
    (folder / "a.png").write_bytes(b"y" * 11)
    assert reference_key(str(folder), 16, net) != before


def test_tf32_matmuls_are_a_new_entry_and_leave_the_old_keys(tmp_path, monkeypatch):
    import scdpo.eval.run as run

    net = TinyBackbone()
    plain = run.reference_key(str(tmp_path), 16, net)
    assert "matmul" not in plain  # the keys written before TF32 existed stay valid
    monkeypatch.setattr(run, "tf32_in_force", lambda device: True)  # `--dtype tf32` on a CUDA backbone
    assert run.reference_key(str(tmp_path), 16, net) == {**plain, "matmul": "tf32"}


def test_a_failed_computation_leaves_no_entry(tmp_path):
    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cached_tensors(tmp_path, "reference", {"k": 1}, boom)
    assert list(tmp_path.iterdir()) == []
    made = cached_tensors(tmp_path, "reference", {"k": 1}, lambda: {"features": torch.arange(3.0)})
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith("reference-") and names[0].endswith(".safetensors")
    assert torch.equal(cached_tensors(tmp_path, "reference", {"k": 1}, boom)["features"], made["features"])


def test_an_unwritable_cache_warns_and_still_returns(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not keep .*SCDPO_CACHE"):
        out = cached_tensors(blocker / "frechet", "reference", {"k": 1}, lambda: {"features": torch.ones(2)})
    assert torch.equal(out["features"], torch.ones(2))


def test_a_damaged_entry_is_computed_again(tmp_path):
    cached_tensors(tmp_path, "reference", {"k": 1}, lambda: {"features": torch.ones(2)})
    entry = next(tmp_path.iterdir())
    entry.write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="unreadable"):
        out = cached_tensors(tmp_path, "reference", {"k": 1}, lambda: {"features": torch.zeros(2)})
    assert torch.equal(out["features"], torch.zeros(2))
    assert torch.equal(cached_tensors(tmp_path, "reference", {"k": 1}, None)["features"], torch.zeros(2))


def test_eval_writes_the_same_metrics_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCDPO_CACHE", str(tmp_path / "cache"))
    tiny = tiny_sd_pipeline(tmp_path / "sd")
    common = ["eval", "--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain", "emojiworld",
              "--steps", "1", "--limit", "3", "--device", "cpu"]
    assert main([*common, "--no-frechet-cache", "--out", str(tmp_path / "a")]) == 0
    assert not (tmp_path / "cache" / "frechet").exists()
    for run in "bc":  # b fills the cache, c reads it
        assert main([*common, "--out", str(tmp_path / run)]) == 0
    assert len(list((tmp_path / "cache" / "frechet").glob("reference-*.safetensors"))) == 2
    fd = {run: {s: m["frechet"] for s, m in json.loads((tmp_path / run / "metrics.json").read_text())["suites"].items()}
          for run in "abc"}
    assert fd["a"] == fd["b"] == fd["c"] and all(f["fd"] > 0 for f in fd["a"].values())
