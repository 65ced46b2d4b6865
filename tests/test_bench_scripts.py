"""The device plumbing of benchmarks/: detach.sh (a round that outlives the device's calls),
jobs.sh's wait_jobs (no endless wait on the packer when no job started), and the order in which
emojiworld_alignment.sh starts its commands (with a stand-in python3)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _detach(name: str, out: Path, *cmd: str, wait: int, rc: int = 0) -> str:
    env = {**os.environ, "OUT": str(out), "WAIT": str(wait), "TAIL": "5", "NEEDS": ""}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "detach.sh"), name, *cmd], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == rc, res
    return res.stdout


def test_detach_runs_once_and_outlives_its_caller(tmp_path):
    name = f"pytest-{os.getpid()}-{time.time_ns()}"
    folder = Path(f"/tmp/detach-{name}")
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    out1.mkdir(), out2.mkdir()
    # the first call starts it (VAR=value words go to its environment) and returns before it ends
    script = 'echo "go $X"; echo packed > "$OUT/a.txt"; sleep 3; echo "n=$(cat "$OUT/n" 2>/dev/null)"; exit 7'
    first = _detach(name, out1, "X=42", "bash", "-c", script, wait=0)
    assert "started" in first and "still running" in first
    # a second call with another command does not start a second copy: it waits for the first one
    second = _detach(name, out2, "bash", "-c", "echo never", wait=20, rc=7)  # exits with the round's code
    assert "ended (exit code 7)" in second and "go 42" in second and "never" not in second
    assert "not this command" in second
    assert (out2 / "a.txt").read_text() == "packed\n"
    assert (folder / "rc").read_text().strip() == "7"
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_detach_starts_nothing_on_a_machine_that_is_not_ready(tmp_path):
    name = f"pytest-ready-{os.getpid()}-{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "SCDPO_DEVICE_READY"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "detach.sh"), name, "touch", str(tmp_path / "ran")],
                         env={**env, "OUT": str(tmp_path), "WAIT": "0"}, capture_output=True, text=True, timeout=30)
    assert res.returncode == 3 and "$SCDPO_DEVICE_READY is not set" in res.stdout and "not started" in res.stdout
    assert not Path(f"/tmp/detach-{name}").exists() and not (tmp_path / "ran").exists()
    # device_env.sh sets it once every carry is staged, and then the round starts
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "detach.sh"), name, "touch", str(tmp_path / "ran")],
                         env={**env, "OUT": str(tmp_path), "WAIT": "5", "SCDPO_DEVICE_READY": "1"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "started" in res.stdout and (tmp_path / "ran").exists()
    subprocess.run(["rm", "-rf", f"/tmp/detach-{name}"], check=True)


def test_detach_reports_a_round_that_died_without_an_exit_code(tmp_path):
    name = f"pytest-dead-{os.getpid()}-{time.time_ns()}"
    folder = Path(f"/tmp/detach-{name}")
    _detach(name, tmp_path, "sleep", "30", wait=0)
    pid = int((folder / "pid").read_text())
    for _ in range(100):  # the pid is written before setsid has made its group: under load killpg can come first
        try:
            os.killpg(pid, 9)  # the round's whole session, shell included
            break
        except ProcessLookupError:
            time.sleep(0.02)
    assert "died without an exit code" in _detach(name, tmp_path, "sleep", "30", wait=20, rc=1)
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_detach_copies_what_is_packed_while_it_waits(tmp_path):
    # a call cut at the device's limit (here `timeout`) still leaves in $OUT what the round packed
    name = f"pytest-sync-{os.getpid()}-{time.time_ns()}"
    folder = Path(f"/tmp/detach-{name}")
    script = 'echo v1 > "$OUT/.p.tmp"; mv "$OUT/.p.tmp" "$OUT/a.txt"; sleep 30'
    env = {**os.environ, "OUT": str(tmp_path), "WAIT": "60", "SYNC": "1", "TAIL": "1", "NEEDS": ""}
    res = subprocess.run(["timeout", "8", "bash", str(ROOT / "benchmarks" / "detach.sh"), name, "bash", "-c", script],
                         env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 124, res  # killed while waiting, before its final copy
    assert (tmp_path / "a.txt").read_text() == "v1\n"
    assert not (tmp_path / ".sync.tmp").exists()
    os.killpg(int((folder / "pid").read_text()), 9)
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_wait_jobs_skips_the_given_pids_and_returns_on_none(tmp_path):
    script = f"""R={tmp_path}; . {ROOT}/benchmarks/jobs.sh
        ( while sleep 1; do :; done ) & PACKER=$!
        wait_jobs "$PACKER"; echo none-waited
        ( sleep 1; echo job-done ) & wait_jobs "$PACKER"; echo after; kill $PACKER"""
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20, check=True)
    assert res.stdout.split() == ["none-waited", "job-done", "after"]


def test_seed_from_copies_earlier_loras_without_overwriting(tmp_path):
    seed, run = tmp_path / "ends", tmp_path / "round"
    (seed / "lora-a").mkdir(parents=True), (run / "lora-a").mkdir(parents=True)
    (seed / "lora-a" / "w").write_text("old"), (seed / "lora-a" / "cfg").write_text("c")
    (seed / "lora-b").mkdir(), (seed / "lora-b" / "w").write_text("b")
    (run / "lora-a" / "w").write_text("trained here")
    script = f'R={run}; . {ROOT}/benchmarks/jobs.sh; SEED_FROM={seed} seed_from; echo rc=$?'
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20, check=True)
    assert res.stdout.strip() == "rc=0"
    # what the round made stays; what it lacks comes from the seed folder
    assert (run / "lora-a" / "w").read_text() == "trained here"
    assert (run / "lora-a" / "cfg").read_text() == "c" and (run / "lora-b" / "w").read_text() == "b"
    missing = f'R={run}; . {ROOT}/benchmarks/jobs.sh; SEED_FROM={tmp_path}/nope seed_from; echo rc=$?'
    res = subprocess.run(["bash", "-c", missing], capture_output=True, text=True, timeout=20, check=True)
    assert "is not a folder: carry it" in res.stdout and "rc=2" in res.stdout


def test_every_planned_candidate_is_a_run_of_the_final_stage():
    # ONLY= keeps the runs it names and silently drops a name it does not know; a typo in a round's
    # default candidates would cost a device round one of its four arms
    stage = (ROOT / "benchmarks" / "emojiworld_round4.sh").read_text()
    # the lines "NAME|flags", and the timestep ablation, named inside a case
    runs = set(re.findall(r"^([\w.-]+)\|", stage, re.M)) | set(re.findall(r'ABLATION="([\w.-]+)\|', stage))
    for script in ("round12.sh", "round16.sh", "round17.sh", "round20.sh", "round21.sh", "round22.sh", "round23.sh",
                   "round25.sh"):
        planned = re.findall(r'(?:DEFAULT=|CANDIDATES:-|ARMS:-)"([^"]+)"', (ROOT / "benchmarks" / script).read_text())
        assert planned, script
        for names in planned:
            missing = set(names.split()) - runs
            assert not missing, f"{script}: {missing} not in emojiworld_round4.sh's runs"


def test_every_benchmark_script_that_calls_scdpo_defines_it():
    # the device machine has no `scdpo` console script on PATH: a script that calls it bare fails
    # there (the sixteenth round's attack tail lost 12 runs to "scdpo: command not found")
    call = re.compile(r"(^|[\s;&|(`])scdpo (attack|eval|train|data|cost|baseline|world|generate)\b")
    for script in sorted((ROOT / "benchmarks").glob("*.sh")):
        code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        if any(call.search(line) for line in code):
            text = "\n".join(code)
            assert "scdpo() {" in text or "jobs.sh" in text, f"{script.name}: define scdpo() or source jobs.sh"


def test_no_benchmark_script_assigns_a_compiler_variable():
    # the device exports CC (the C compiler) and triton builds its driver with it: round24.sh kept
    # compile_cache.sh's settings in a variable named CC, and the twenty-ninth round's stage died on
    # "No such file or directory: 'DEVICE=cuda BATCH=32 ...'"
    assign = re.compile(r"(^|[\s;&|(])(CC|CXX|CFLAGS|LDFLAGS)=")
    for script in sorted((ROOT / "benchmarks").glob("*.sh")) + sorted((ROOT / "scripts").glob("*.sh")):
        code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        bad = [line for line in code if assign.search(line)]
        assert not bad, f"{script.name} assigns a compiler variable: {bad[0].strip()}"


def test_detach_runs_the_round_on_a_snapshot_of_src(tmp_path):
    # the device rewrites the working tree at every call; the round must not see that (nineteenth round)
    name = f"pytest-snap-{os.getpid()}-{time.time_ns()}"
    folder = Path(f"/tmp/detach-{name}")
    pkg = tmp_path / "src" / "scdpo"
    (pkg / "assets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    (pkg / "assets" / "a.txt").write_text("asset\n")
    script = ('sleep 2; python3 -c "import scdpo, pathlib; print(scdpo.VALUE, '
              '(pathlib.Path(scdpo.__file__).parent / \'assets/a.txt\').read_text().strip())" > "$OUT/v.txt"')
    env = {**os.environ, "OUT": str(tmp_path), "WAIT": "0", "TAIL": "1", "PYTHONPATH": "", "NEEDS": ""}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "detach.sh"), name, "bash", "-c", script], env=env, cwd=tmp_path,
                   capture_output=True, text=True, timeout=30, check=True)
    (pkg / "__init__.py").unlink()  # the tree rewritten under the running round
    for _ in range(100):
        if (folder / "rc").exists():
            break
        time.sleep(0.1)
    assert (folder / "rc").read_text().strip() == "0"
    assert (folder / "out" / "v.txt").read_text().split() == ["1", "asset"]  # its own copy; the assets linked
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_p4d_distance_is_relative_to_the_target_per_token():
    import pytest
    import torch
    from test_perf import load_script

    relative = load_script("p4d_distance").relative
    b = torch.ones(2, 3, 4)
    assert relative(b, b) == 0.0
    assert relative(3 * b, b) == pytest.approx(2.0)


def test_device_env_stages_a_carry_once_and_again_only_when_it_changed(tmp_path):
    # a second call of the same lease must not rewrite the stage's files under a running round: the
    # twenty-eighth round lost a scoring to a config.json that the next call's copy had truncated
    carry = tmp_path / ".carry" / "s1" / "emojiworld" / "vae"
    carry.mkdir(parents=True)
    (carry / "config.json").write_text("{}")
    stage = tmp_path / "stage"

    def source() -> str:
        res = subprocess.run(["bash", "-c", f". {ROOT / 'scripts' / 'device_env.sh'}"], cwd=tmp_path,
                             env={**os.environ, "STAGE": str(stage)}, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res
        return res.stdout

    assert "staged emojiworld" in source()
    staged = stage / "emojiworld" / "vae" / "config.json"
    first = staged.stat()
    time.sleep(0.05)
    source()
    again = staged.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    # a changed carry is staged anew, a change of contents alone included (the same size)
    (carry / "config.json").write_text('{"a": 1}')
    source()
    assert staged.read_text() == '{"a": 1}' and not list(stage.glob(".tmp-*")) and not list(stage.glob(".old-*"))
    (carry / "config.json").write_text('{"b": 2}')
    source()
    assert staged.read_text() == '{"b": 2}' and len(list(stage.glob(".staged-s1-*"))) == 1


FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for `python3 -m scdpo.cli ...`: logs when each command begins and ends, and writes the output that
# benchmarks/emojiworld_alignment.sh looks for
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out=$a; prev=$a; done
echo "begin $*" >> "$LOG"
case "$*" in
  *"cost train"*) sleep 1; mkdir -p "$out"; echo {} > "$out/config.json";;  # as long as the candidates: they overlap
  *"--candidates-only"*) sleep 1; mkdir -p "$out/.work";;
  *"data build"*) sleep 2; mkdir -p "$out"; touch "$out/README.md";;
  *"eval compare"*) mkdir -p "$out"; echo table > "$out/table.md";;
  *" eval "*) sleep 1; mkdir -p "$out"; echo {} > "$out/metrics.json";;
  *" train "*) mkdir -p "$out"; touch "$out/pytorch_lora_weights.safetensors"
              prev=""; for a in "$@"; do  # --together's runs: --run OUT=FLAGS
                  [ "$prev" = "--run" ] && { mkdir -p "${a%%=*}"; touch "${a%%=*}/pytorch_lora_weights.safetensors"; }
                  prev=$a; done;;
esac
echo "end $*" >> "$LOG"
"""


def _pipeline_log(tmp_path, **env) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    # the script's own settings come from the test alone, never from the caller's environment
    mine = ("TINY", "DEADLINE", "EARLY_EVALS", "BASELINES", "METHODS", "PAR", "SERIAL_THREADS", "SUITES", "TRAIN_FLAGS",
            "TOGETHER", "WARM", "WARM_SOCKET", "CANDIDATES_FIRST", "EVAL_FLAGS")
    base = {k: v for k, v in os.environ.items() if k not in mine}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "emojiworld_alignment.sh")], cwd=ROOT, timeout=120,
                         env={**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log),
                              "R": str(tmp_path / "r"), "STAGES": "cost data train eval compare", **env},
                         capture_output=True, text=True)
    assert res.returncode == 0, res
    return log.read_text().splitlines()


def _first(lines: list[str], *words: str) -> int:
    return next(i for i, line in enumerate(lines) if all(w in line for w in words))


def _last(lines: list[str], *words: str) -> int:
    return max(i for i, line in enumerate(lines) if all(w in line for w in words))


def test_pipeline_starts_the_untrained_evaluations_beside_the_data_build(tmp_path):
    # the base model's and the negative prompts' evaluations need only the cost model (thirty-fourth round:
    # the eval stage 83 s -> 41 s); the trained models' evaluations still wait for their trainings
    lines = _pipeline_log(tmp_path, SERIAL_THREADS="3")
    for name in ("base", "negative-prompt", "negative-prompt-oracle"):  # each runs while the data build runs
        assert _first(lines, "begin", f"--name {name} ") < _last(lines, "end", "data build")
        assert _last(lines, "begin", "data build") < _first(lines, "end", f"--name {name} ")
    assert _first(lines, "end", "cost train") < _first(lines, "begin", "--name base ")
    assert _first(lines, "--name sc-dpo ", "--lora") > _last(lines, "end", " train --config")
    assert sum("begin" in line and " eval --model" in line for line in lines) == 9  # each evaluation once
    assert "--threads 3 cost train" in lines[_first(lines, "cost train")]
    assert lines[_last(lines, "begin", "data build")].endswith("--threads 3")  # the build (its candidates: below)


def test_pipeline_samples_the_builds_candidates_beside_the_cost_model(tmp_path):
    # the build's first pass needs no cost model: it runs while the cost model trains, and the build itself
    # (which scores the costs) starts once both are done; CANDIDATES_FIRST=0 builds after the cost model alone
    lines = _pipeline_log(tmp_path / "first")
    ahead = _first(lines, "begin", "data build", "--candidates-only")
    assert ahead < _first(lines, "end", "cost train") and _first(lines, "begin", "cost train") < _first(
        lines, "end", "--candidates-only")
    build = next(i for i, line in enumerate(lines) if line.startswith("begin") and "data build" in line
                 and "--candidates-only" not in line)
    assert build > _first(lines, "end", "cost train") and build > _first(lines, "end", "--candidates-only")
    # the same settings, or the build would refuse the candidates; the build alone takes the serial threads
    flags = lambda line: line.split(" data build ", 1)[1].split()  # noqa: E731
    assert flags(lines[ahead]) == [*flags(lines[build])[:-2], "--candidates-only"]
    assert flags(lines[build])[-2] == "--threads"
    lines = _pipeline_log(tmp_path / "after", CANDIDATES_FIRST="0")
    assert not any("--candidates-only" in line for line in lines)
    assert _first(lines, "begin", "data build") > _first(lines, "end", "cost train")


def test_pipeline_forks_its_commands_from_one_warm_server_unless_told_not_to(tmp_path):
    # WARM=1, the default on Linux: one server started before the first command and stopped after the last, every
    # command run through it (scdpo.utils.warm); WARM=0: each command its own `python3 -m scdpo.cli` process
    for env, warm in (({}, sys.platform.startswith("linux")), ({"WARM": "1"}, True), ({"WARM": "0"}, False)):
        lines = _pipeline_log(tmp_path / f"warm-{env.get('WARM', 'default')}", **env)
        commands = [line for line in lines if line.startswith("begin") and "scdpo.utils.warm start " not in line
                    and "scdpo.utils.warm stop " not in line]
        # cost, the build's candidates, the build, the trainings together, 9 evaluations, compare
        assert len(commands) == 1 + 2 + 1 + 9 + 1
        if warm:
            assert "-m scdpo.utils.warm start " in lines[0] and "-m scdpo.utils.warm stop " in lines[-2]
            socket = lines[0].split(" start ")[1].split()[0]
            assert all(line.startswith(f"begin -m scdpo.utils.warm run --wait 0 --cold-if-absent {socket} -- ")
                       for line in commands)
        else:
            assert all(line.startswith("begin -m scdpo.cli ") for line in commands)


def test_pipeline_runs_every_evaluation_after_the_trainings_with_early_evals_off(tmp_path):
    lines = _pipeline_log(tmp_path, EARLY_EVALS="0")
    assert _first(lines, "begin", "--name base ") > _last(lines, "end", " train --config")
    assert sum("begin" in line and " eval --model" in line for line in lines) == 9


def test_pipeline_trains_its_methods_in_one_process_unless_given_methods(tmp_path):
    lines = _pipeline_log(tmp_path / "default")  # the default methods: one `scdpo train --together`
    trains = [line for line in lines if line.startswith("begin") and " train --config" in line]
    assert len(trains) == 1 and "--together" in trains[0] and trains[0].count("--run ") == 6
    assert f"--run {tmp_path}/default/r/lora-sc-dpo-no-dfm=--loss sc-dpo --focus-gamma 0" in trains[0]
    assert sum("begin" in line and "--lora" in line for line in lines) == 6  # every run's LoRA is evaluated
    for env, n in (({"TOGETHER": "0"}, 6), ({"METHODS": "a|--lr 1\nb|--lr 2"}, 2),
                   ({"METHODS": "a|--loss dpo\nb|--loss sc-dpo", "TOGETHER": "1"}, 1)):
        lines = _pipeline_log(tmp_path / str(len(env)) / env.get("TOGETHER", "-"), **env)
        trains = [line for line in lines if line.startswith("begin") and " train --config" in line]
        assert len(trains) == n and all(("--together" in line) == (n == 1) for line in trains), env


def test_eval_flags_reach_every_evaluation_of_the_pipeline(tmp_path):
    lines = _pipeline_log(tmp_path, EVAL_FLAGS="--fill-batches")
    evals = [line for line in lines if line.startswith("begin") and " eval --model" in line]
    assert len(evals) == 9 and all("--fill-batches" in line for line in evals)
    assert not any("--fill-batches" in line for line in lines if " eval --model" not in line)
