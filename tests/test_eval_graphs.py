"""`scdpo eval --cuda-graphs`: opt-in, the flag reaching the sampler, metrics.json, and the
recorder's thread-local capture (no GPU here: fakes stand in for torch's CUDA graph API)."""

from __future__ import annotations

import json

import pytest
import torch

from scdpo.cli import main
from scdpo.eval.config import EvalConfig
from scdpo.eval.run import sample_all
from scdpo.models.sampler_config import SamplerConfig
from scdpo.models.testing import tiny_sd_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


def test_cuda_graphs_with_compile_is_a_one_line_error():
    with pytest.raises(ValueError, match="--cuda-graphs cannot be used with the sampler's compile") as err:
        EvalConfig(model="emojiworld", cuda_graphs=True, sampler=SamplerConfig(compile=True))
    assert "\n" not in str(err.value)
    EvalConfig(model="emojiworld", sampler=SamplerConfig(compile=True))  # unset: off, no error


def _eval(tiny, out, *flags, monkeypatch=None) -> tuple[dict, list]:
    """A tiny CPU eval with ``flags``: its metrics.json and the SamplerConfigs it sampled with."""
    from scdpo.eval import run

    seen = []

    def spy(model, samples, sampler, *args, **kwargs):
        seen.append(sampler)
        return sample_all(model, samples, sampler, *args, **kwargs)

    monkeypatch.setattr(run, "sample_all", spy)
    assert main(["eval", "--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain",
                 "emojiworld", "--steps", "1", "--limit", "2", "--device", "cpu", "--no-frechet", "--no-overlap",
                 *flags, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text()), seen


def _strip(m: dict) -> dict:
    """metrics.json without times, the folder and the graphs' setting."""
    m = {k: v for k, v in m.items() if k not in ("seconds", "created", "seconds_by_phase", "cuda_graphs",
                                                   "cuda_graphs_failed")}
    m["config"] = {k: v for k, v in m["config"].items() if k not in ("out", "cuda_graphs")}
    m["suites"] = {s: {k: v for k, v in x.items() if k != "seconds"} for s, x in m["suites"].items()}
    return m


def test_the_flag_reaches_the_sampler_and_metrics_and_changes_nothing_on_the_cpu(tiny, tmp_path, monkeypatch):
    on, seen_on = _eval(tiny, tmp_path / "on", "--cuda-graphs", monkeypatch=monkeypatch)
    off, seen_off = _eval(tiny, tmp_path / "off", "--no-cuda-graphs", monkeypatch=monkeypatch)
    auto, seen_auto = _eval(tiny, tmp_path / "auto", monkeypatch=monkeypatch)
    assert len(seen_on) == len(seen_off) == len(seen_auto) == 2  # one sample_all a suite
    # graphs exist only on a CUDA device: on the CPU even --cuda-graphs samples, and records, without them
    assert all(s.cuda_graphs is False for s in seen_on + seen_off + seen_auto)
    assert on["cuda_graphs"] is on["config"]["cuda_graphs"] is False and "cuda_graphs_failed" not in on
    assert off["cuda_graphs"] is off["config"]["cuda_graphs"] is False and "cuda_graphs_failed" not in off
    assert auto["cuda_graphs"] is auto["config"]["cuda_graphs"] is False  # resolved, not None
    # off the GPU the sampler ignores them: the same images, so the same numbers
    assert _strip(on) == _strip(off) == _strip(auto)
    for suite in on["suites"]:
        assert (tmp_path / "on" / "suites" / suite / "grid.png").read_bytes() == \
            (tmp_path / "off" / "suites" / suite / "grid.png").read_bytes()


def test_the_setting_reaches_the_sampler_of_an_emojiworld_model_on_cuda(monkeypatch):
    """The resolved value reaches the SamplerConfig the eval samples with (a fake CUDA model; the run
    stops at its first sample); unset, a caller's SamplerConfig(cuda_graphs=True) still asks for them."""
    import types

    from scdpo.eval import run

    seen = []

    class Stop(Exception):
        pass

    def spy(model, samples, sampler, *args, **kwargs):
        seen.append(sampler)
        raise Stop

    fake = types.SimpleNamespace(device=torch.device("cuda"), resolution=16, dtype_name="tf32")
    monkeypatch.setattr(run, "sample_all", spy)
    monkeypatch.setattr(run, "collect_suites", lambda c: {"eval-clean": []})
    monkeypatch.setattr(run, "load_tools", lambda c, device, domain: run.Tools())
    monkeypatch.setattr("scdpo.models.t2i.T2IModel.for_sampling", staticmethod(lambda *a, **k: fake))
    for flag, sampler, want in ((None, False, False), (True, False, True), (None, True, True), (False, True, False)):
        with pytest.raises(Stop):
            run.run(EvalConfig(model="emojiworld", cuda_graphs=flag, overlap=False,
                               sampler=SamplerConfig(cuda_graphs=sampler)))
        assert seen.pop().cuda_graphs is want


def test_cuda_recorder_records_in_thread_local_capture_mode(monkeypatch):
    """Another thread (the eval's worker) may use the GPU while the sampler records: torch's default
    "global" mode would fail the capture then."""
    from scdpo.models import graphs

    calls, kept = [], []

    class FakeGraph:
        def replay(self):
            calls.append("replay")

    class FakeCapture:
        def __init__(self, graph, **kwargs):
            calls.append(("graph", kwargs))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(graphs.torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(graphs.torch.cuda, "graph", FakeCapture)
    monkeypatch.setattr(graphs, "warm_up", lambda run: calls.append("warm_up"))
    pool, stream = object(), object()
    replay, out = graphs.cuda_recorder(pool, stream, kept.append)(lambda: torch.ones(2))
    assert calls == ["warm_up", ("graph", {"pool": pool, "stream": stream, "capture_error_mode": "thread_local"})]
    assert torch.equal(out, torch.ones(2)) and len(kept) == 1 and isinstance(kept[0], FakeGraph)
    replay()
    assert calls[-1] == "replay"
