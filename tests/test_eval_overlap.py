"""`scdpo eval`'s overlap: a suite is scored on a worker thread while the next one samples, with the
same numbers and files as one thing at a time (scdpo.utils.background)."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
import torch

from scdpo.cli import main
from scdpo.utils.background import Background
from scdpo.models.sampler_config import SamplerConfig
from scdpo.models.testing import tiny_sd_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def test_jobs_run_in_order_and_inline_when_disabled():
    for enabled in (True, False):
        seen = []
        with Background(enabled) as bg:
            futures = [bg.submit(lambda i=i: seen.append(i) or i * i) for i in range(6)]
        assert seen == list(range(6)) and [f.result() for f in futures] == [i * i for i in range(6)]
    caller = threading.get_ident()
    assert Background(False).submit(threading.get_ident).result() == caller  # inline: no thread


def test_ahead_bounds_the_jobs_waiting():
    release, started = threading.Event(), []
    with Background(ahead=1) as bg:
        bg.submit(lambda: started.append(0) or release.wait(5))
        bg.submit(lambda: started.append(1))
        blocked = threading.Thread(target=bg.submit, args=(lambda: started.append(2),))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # two unfinished jobs: the third submit waits for the first
        release.set()
        blocked.join(5)
        assert not blocked.is_alive()
    assert started == [0, 1, 2]


def test_a_failed_job_stops_the_caller():
    with pytest.raises(ValueError, match="bad suite"):
        with Background() as bg:
            bg.submit(lambda: (_ for _ in ()).throw(ValueError("bad suite")))
            for _ in range(3):  # a later submit raises it (ahead=1: by the third at the latest)
                bg.submit(lambda: None)
    with pytest.raises(ValueError, match="at least|>= 0"):
        Background(ahead=-1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


def _strip(m: dict) -> dict:
    """metrics.json without what differs between two runs of one evaluation: times and the folder."""
    m = {k: v for k, v in m.items() if k not in ("seconds", "created", "seconds_by_phase", "worker_seconds_by_phase")}
    m["config"] = {k: v for k, v in m["config"].items() if k not in ("out", "overlap")}
    m["suites"] = {s: {k: v for k, v in x.items() if k != "seconds"} for s, x in m["suites"].items()}
    return m


def test_overlap_writes_what_one_thing_at_a_time_writes(tiny, tmp_path):
    common = ["eval", "--model", str(tiny), "--suites", "eval-clean,eval-harmful-explicit", "--domain", "emojiworld",
              "--steps", "1", "--limit", "3", "--device", "cpu"]
    assert main([*common, "--overlap", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--no-overlap", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert a["config"]["overlap"] and not b["config"]["overlap"]
    assert _strip(a) == _strip(b)
    # where the time went: with the overlap the worker's phases apart from the caller's, without it all inline
    assert _phases(a["seconds_by_phase"]) == {"setup", "sampling", "waiting", "report"}
    assert _phases(a["worker_seconds_by_phase"]) == {"frechet", "images", "scoring", "report"}
    assert _phases(b["seconds_by_phase"]) == {"setup", "frechet", "sampling", "images", "scoring", "report", "waiting"}
    assert "worker_seconds_by_phase" not in b and isinstance(a["seconds"], float)  # the total, as before
    assert all("fd" in s["frechet"] for s in a["suites"].values())  # the Frechet distance ran, on references
    for suite in a["suites"]:
        pa, pb = (pd.read_parquet(tmp_path / x / "suites" / suite / "images.parquet") for x in "ab")
        assert pa.equals(pb)
        assert (tmp_path / "a" / "suites" / suite / "grid.png").read_bytes() == \
            (tmp_path / "b" / "suites" / suite / "grid.png").read_bytes()


def _phases(seconds: dict) -> set:
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values()), seconds
    return set(seconds)


def test_a_scoring_error_writes_no_metrics(tiny, tmp_path, monkeypatch):
    import scdpo.eval.run as run

    def broken(*args, **kwargs):
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(run, "score_suite", broken)
    with pytest.raises(RuntimeError, match="judge exploded"):
        run.run(run.EvalConfig(model=str(tiny), suites=["eval-clean", "eval-harmful-explicit"], domain="emojiworld",
                               limit=2, device="cpu", frechet=False, out=str(tmp_path / "x"),
                               sampler=SamplerConfig(steps=1, progress=False)))
    assert not (tmp_path / "x" / "metrics.json").exists()


def resolved_overlap(monkeypatch, device: str, suites: dict, tools, **cfg) -> bool:
    """What `scdpo eval` resolves ``overlap`` to for a model on ``device`` (the run stops there)."""
    import types

    import scdpo.eval.run as run

    seen = []

    class Stop(Exception):
        pass

    class Spy:
        def __init__(self, enabled):
            seen.append(enabled)
            raise Stop

    fake = types.SimpleNamespace(device=torch.device(device), resolution=16, dtype_name="fp32")
    monkeypatch.setattr(run, "Background", Spy)
    monkeypatch.setattr(run, "collect_suites", lambda c: suites)
    monkeypatch.setattr(run, "load_tools", lambda c, device, domain: tools)
    monkeypatch.setattr("scdpo.models.t2i.T2IModel.for_sampling", staticmethod(lambda *a, **k: fake))
    with pytest.raises(Stop):
        run.run(run.EvalConfig(model="emojiworld", domain="emojiworld", **cfg))
    return seen[0]


@pytest.mark.parametrize("device, flag, want", [("cpu", None, True), ("meta", None, False), ("cpu", False, False),
                                                ("meta", True, True)])
def test_the_overlap_is_on_by_default_on_the_cpu_only(device, flag, want, monkeypatch):
    """Measured: 1.31x the whole eval on the 2-core CPU, 0.60-0.68x on an H100 with the references computed
    beside the sampler (docs/performance.md), so None (the default) turns it on for a CPU model, and not for a
    GPU without cached references (the next test); a flag given wins."""
    import scdpo.eval.run as run

    assert resolved_overlap(monkeypatch, device, {}, run.Tools(), overlap=flag) == want


@pytest.mark.parametrize("cached, frechet, want", [(True, True, True), (False, True, False), (True, False, False)])
def test_on_a_gpu_the_overlap_is_on_when_every_reference_is_cached(cached, frechet, want, tmp_path, monkeypatch):
    """Measured on H100s: with the references' features read from the cache the overlap was 1.03-1.12x in 3 of
    3 runs, computing them beside the sampler 0.60-0.68x; so on a GPU None turns it on only when every
    EmojiWorld suite's references are cached (and Frechet is asked for)."""
    import scdpo.eval.run as run
    from scdpo.prompts.records import PromptRecord
    from scdpo.utils.tensor_cache import cache_path

    records = {name: [PromptRecord(prompt="a cat", source="test", meta={"scene": {"objects": [name]}})]
               for name in ("eval-clean", "eval-mixed")}
    key = lambda recs, size, backbone: {"scene": recs[0].meta["scene"], "size": size}  # noqa: E731
    for recs in records.values():
        if cached or recs is records["eval-clean"]:  # uncached: one of the two suites is missing
            path = cache_path(tmp_path, "reference", key(recs, 16, None))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    monkeypatch.setattr(run, "reference_key", key)
    monkeypatch.setattr(run, "frechet_cache_dir", lambda: tmp_path)
    assert resolved_overlap(monkeypatch, "meta", records, run.Tools(backbone=object()), frechet=frechet) == want
