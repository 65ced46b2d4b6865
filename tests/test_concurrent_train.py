"""benchmarks/concurrent_train.py's plumbing without a training (its CPU dry run takes minutes): a row
waits on its processes' PIDs, stops the rest when one fails or the deadline passes, names the
failure by the log's last line, and appends its rows to rows.jsonl and table.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest

from test_perf import load_script  # tests/ is on sys.path (no package)


@pytest.fixture(scope="module")
def ct():
    return load_script("concurrent_train")


def start(code: str, log) -> subprocess.Popen:
    with open(log, "w") as fh:  # as run_row starts them: a session (process group) of its own
        return subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_a_failing_process_fails_the_row_and_stops_the_others(ct, tmp_path):
    bar = "import sys; print('step 3 at 9.0 s'); sys.stderr.write('train:  33%|###  | 1/3\\r');"
    procs = [start("import time; time.sleep(60)", tmp_path / "0.log"),
             start(bar + "raise SystemExit('ValueError: out of memory')", tmp_path / "1.log")]
    assert ct.wait_row(procs, deadline=time.time() + 60) == "failed"
    assert procs[0].returncode is not None and procs[0].returncode < 0  # stopped, not left running
    assert ct.last_line(tmp_path / "1.log") == "ValueError: out of memory"  # the cause, not the progress bar


def test_a_row_past_its_deadline_times_out_and_is_stopped(ct, tmp_path):
    procs = [start("print('step 1 at 2.0 s', flush=True); import time; time.sleep(60)", tmp_path / "0.log")]
    assert ct.wait_row(procs, deadline=time.time() + 1) == "timeout"
    assert procs[0].returncode is not None
    assert ct.last_line(tmp_path / "0.log") == "step 1 at 2.0 s"


def test_rows_append_to_the_jsonl_and_the_table(ct, tmp_path):
    args = argparse.Namespace(steps=60, warmup=10, batch_size=32, device="cuda", cache="row")
    proc = {"status": "ok", "steps_per_s": 2.0, "warmup_s": 190.0, "wait_s": 3.0, "loss": 1.5, "peak_gb": 4.0}
    ct.record(tmp_path, ct.summarise("compile", 2, "ok", 250.0, [proc, {**proc, "steps_per_s": 1.0}], {}, args))
    failed = [{"status": "failed", "last_line": "a | b"}]
    ct.record(tmp_path, ct.summarise("eager", 12, "failed", 9.0, failed, {}, args))
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == ["compile x2", "eager x12"]
    assert rows[0]["aggregate_steps_per_s"] == 3.0 and rows[0]["aggregate_slowest_steps_per_s"] == 2.0
    assert rows[1]["aggregate_steps_per_s"] is None
    table = (tmp_path / "table.md").read_text()
    assert "| compile x2 | ok | 1.0-2.0 | 3.0 | 2.0 | 190.0 | 3.0 | 1.5 | 4.0 | 250.0 |" in table
    assert "| eager x12 | failed: a / b |" in table
    assert not list(tmp_path.glob(".*.tmp"))  # written under temporary names, renamed


def test_every_variant_is_a_valid_training(ct):
    from scdpo.train.config import TrainConfig

    assert set(ct.VARIANTS) == {"eager", "graphs", "compile", "compile-reduce-overhead",
                                "compile-max-autotune-no-cudagraphs"}
    for workload in ct.WORKLOADS.values():
        for name, flags in ct.VARIANTS.items():
            cfg = TrainConfig(model="emojiworld", dataset="d", out="o", **workload, **flags)
            # on a GPU the eager rows stay eager (graphs are on by default there without the anchor)
            assert cfg.uses_cuda_graphs("cuda") is (name == "graphs")


def test_rows_filter(ct):
    args = argparse.Namespace(rows=["compile:12", "eager:1", "compile-reduce-overhead:6"], n=[1], variants=["eager"])
    assert ct.rows_to_run(args) == [("compile", 12), ("eager", 1), ("compile-reduce-overhead", 6)]
    with pytest.raises(SystemExit, match="VARIANT:N"):
        ct.rows_to_run(argparse.Namespace(rows=["compiled:6"], n=[1], variants=["eager"]))
