"""`TrainConfig.compile_cache` / `scdpo.models.speed.compile_cache`: torch.compile's artefacts carried
from one run to the next through one folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from scdpo.models import speed, testing
from scdpo.train.config import TrainConfig


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "sd")


def _compiles(monkeypatch, kernels: int, artefacts: bytes) -> None:
    """Stand-ins: the next ``kernels`` compilations miss inductor's cache, then save gives ``artefacts``."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (artefacts, None))
    counters["inductor"]["fxgraph_cache_miss"] += kernels


def test_loads_every_file_and_adds_one_when_something_new_compiled(tmp_path, monkeypatch):
    loaded, folder = [], tmp_path / "cache"
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: loaded.append(data) or "read")
    with speed.compile_cache(folder):
        _compiles(monkeypatch, 3, b"first run")
    first = list(folder.iterdir())
    assert [p.read_bytes() for p in first] == [b"first run"] and loaded == []
    with speed.compile_cache(folder):  # every kernel found: nothing new to keep
        _compiles(monkeypatch, 0, b"a subset")
    assert list(folder.iterdir()) == first and loaded == [b"first run"]
    with speed.compile_cache(folder):  # a new graph: a second file, the first one kept
        _compiles(monkeypatch, 1, b"third run")
    assert sorted(p.read_bytes() for p in folder.iterdir()) == [b"first run", b"third run"]
    with speed.compile_cache(folder, save=False):  # a non-main rank reads only
        _compiles(monkeypatch, 5, b"never written")
    assert len(list(folder.iterdir())) == 2 and sorted(loaded[-2:]) == [b"first run", b"third run"]
    assert not [p for p in folder.iterdir() if p.suffix != ".bin"]  # no temporary file left


def test_an_unreadable_file_is_skipped_with_one_warning(tmp_path, monkeypatch, caplog):
    (tmp_path / "old.bin").write_bytes(b"not torch's")
    (tmp_path / "notes.txt").write_text("not an artefact file: never read")
    with pytest.warns(UserWarning, match=r"compile cache file .*old.bin could not be read .*skipped") as seen:
        with speed.compile_cache(tmp_path):
            _compiles(monkeypatch, 1, b"fresh")
    assert len(seen) == 1 and len(list(tmp_path.glob("*.bin"))) == 2
    assert not [r for r in caplog.records if r.name.startswith("torch")]  # torch's own traceback kept quiet


def test_saved_even_when_the_run_fails(tmp_path, monkeypatch):
    # what compiled before a crash is kept: the next try starts from it
    with pytest.raises(RuntimeError), speed.compile_cache(tmp_path):
        _compiles(monkeypatch, 2, b"partial")
        raise RuntimeError("diverged")
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [b"partial"]


def test_none_loads_and_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with speed.compile_cache(None):
        _compiles(monkeypatch, 2, b"kernels")
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_reads_and_writes_it(sd, tmp_path, monkeypatch):
    from scdpo.train.trainer import train
    from test_trainer import FAST, write_pairs  # tests/ is on sys.path (no package)

    loaded, cache = [], tmp_path / "kernels"
    cache.mkdir()
    (cache / "earlier.bin").write_bytes(b"earlier run")
    # the blocks stay eager (one step in a second) and "compile" one new kernel
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: _compiles(monkeypatch, 1, b"this run"))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: loaded.append(data) or "read")
    data = write_pairs(tmp_path / "pairs.parquet", n=4)
    train(TrainConfig(model=str(sd), dataset=str(data), out=str(tmp_path / "run"), loss="dpo", batch_size=2,
                      max_steps=1, compile=True, compile_cache=str(cache), **FAST))
    assert loaded == [b"earlier run"]
    assert sorted(p.read_bytes() for p in cache.iterdir()) == [b"earlier run", b"this run"]


def test_compile_cache_is_refused_with_no_compile_only():
    with pytest.raises(ValueError, match="compile_cache 'kernels' holds torch.compile's kernels: it needs --compile"):
        TrainConfig(model="m", dataset="d", out="o", compile_cache="kernels", compile=False)
    # unset, compile may turn on by itself (TrainConfig.compiles): the cache is taken
    assert TrainConfig(model="m", dataset="d", out="o", compile_cache="kernels").compile_cache == "kernels"


_RUN = textwrap.dedent("""
    import json, sys, torch
    from torch._dynamo.utils import counters
    from scdpo.models.speed import compile_cache

    class Block(torch.nn.Module):  # user code: dynamo skips torch.nn's own forwards
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.nn.functional.gelu(self.a(x)))

    torch.manual_seed(0)
    with compile_cache(sys.argv[1]):
        block = Block()
        block.compile(dynamic=False)
        out = block(torch.randn(2, 8))
    print(json.dumps({"hits": counters["inductor"]["fxgraph_cache_hit"], "sum": float(out.sum())}))
""")


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler on the CPU")
def test_a_second_process_hits_the_first_ones_kernels(tmp_path):
    # each process has its own empty inductor folder, as a fresh machine would: only the file carries kernels
    cache, script = tmp_path / "kernels", tmp_path / "run.py"
    script.write_text(_RUN)

    def run(name: str) -> dict:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / name), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, str(script), str(cache)], env=env, capture_output=True, text=True)
        if done.returncode and any(e in done.stderr for e in ("CppCompileError", "InvalidCxxCompiler")):
            pytest.skip(f"inductor cannot build C++ on this machine: {done.stderr.strip().splitlines()[-1]}")
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run("machine-1")
    assert first["hits"] == 0 and len(list(cache.glob("*.bin"))) == 1
    second = run("machine-2")
    assert second["hits"] > 0 and second["sum"] == first["sum"]
    assert len(list(cache.glob("*.bin"))) == 1  # nothing new compiled, nothing added
