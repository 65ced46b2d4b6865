"""The README's shell commands, run against stand-ins for python3, pip and scdpo (no install)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE = """#!/usr/bin/env bash
# logs its name and arguments; `python3 -m venv DIR` makes an activate script
echo "$(basename "$0") $*" >> "$FAKE_LOG"
if [ "${1:-}" = "-m" ] && [ "${2:-}" = "venv" ]; then mkdir -p "$3/bin"; : > "$3/bin/activate"; fi
"""


@pytest.fixture
def fake_repo(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3", "python", "scdpo"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "log")}
    return repo, env, tmp_path / "log"


def test_demo_script_passes_its_arguments_to_the_demo_only(fake_repo):
    repo, env, log = fake_repo
    r = subprocess.run(["bash", "scripts/demo.sh", "--out", "/tmp/x", "--threads", "1"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert "python -m pip install -q -e ." in lines  # not ".--out"
    assert lines[-1] == "scdpo demo --out outputs/demo --out /tmp/x --threads 1"


def test_test_script_installs_the_test_extra(fake_repo):
    repo, env, log = fake_repo
    r = subprocess.run(["bash", "scripts/test.sh", "-k", "x"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert "python -m pip install -q -e .[test]" in lines
    assert lines[-1] == "python -m pytest -q -k x"
