"""Warm starts (scdpo.utils.warm): commands forked from one server get the client's arguments, streams, working
directory and environment, return their exit codes, are interrupted with the client, and run cold when the
environment differs in what libraries read at import."""

import os
import signal
import subprocess
import sys
import time

import pytest

from scdpo.utils import warm, warm_server

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="Linux: fork, SCM_RIGHTS")

# what a test server runs for a command: small behaviours, no torch (the server preloads nothing heavy)
TARGET = r'''
import os, sys, time

def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "--version":
        print("warm target")
    elif cmd == "echo":
        print(" ".join(argv[1:]))
        print("to stderr", file=sys.stderr)
    elif cmd == "where":
        print(os.environ.get("WARM_TEST", "-"), os.getcwd(), os.environ.get("SET_AT_IMPORT", "-"), sys.path[0])
    elif cmd == "fds":
        print(" ".join(sorted(os.listdir("/proc/self/fd"), key=int)))
    elif cmd == "upper":
        print(sys.stdin.read().upper(), end="")
    elif cmd == "exit":
        return int(argv[1])
    elif cmd == "raise":
        raise RuntimeError("boom")
    elif cmd == "sleep":
        with open(argv[1], "w") as f:
            f.write(str(os.getpid()))
        try:
            print("sleeping", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            return 130
    return 0
'''
# imported by the server: an import that sets a variable (as transformers' verbosity is set by scdpo.cli)
PRELOADED = 'import os\nos.environ.setdefault("SET_AT_IMPORT", "yes")\n'


@pytest.fixture
def server(tmp_path):
    """A server preloading a module that sets a variable, its commands run by warm_target.main; yields a function
    that runs a client and returns the CompletedProcess."""
    (tmp_path / "warm_target.py").write_text(TARGET)
    (tmp_path / "warm_preloaded.py").write_text(PRELOADED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    sock = str(tmp_path / "s.sock")
    start = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "start", sock, "--preload", "warm_preloaded",
                            "--target", "warm_target:main", "--idle-exit", "60"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    pid = int(start.stdout)

    def client(*args, popen=False, extra_env=None, **kw):
        cmd = [sys.executable, "-m", "scdpo.utils.warm", "run", sock, "--", *args]
        if popen:
            return subprocess.Popen(cmd, env={**env, **(extra_env or {})}, stdout=subprocess.PIPE, text=True, **kw)
        return subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=60, **kw)

    client.socket, client.env, client.pid = sock, env, pid
    yield client
    assert warm.stop(sock) and _wait_gone(pid) and not os.path.exists(sock)


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether process ``pid`` ended within ``timeout`` (reaped by its parent, or a zombie of init's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_command_gets_the_clients_arguments_streams_cwd_and_environment(server, tmp_path):
    res = server("echo", "a", "b c")
    assert (res.returncode, res.stdout, res.stderr) == (0, "a b c\n", "to stderr\n")
    where = tmp_path / "elsewhere"
    where.mkdir()
    res = server("where", cwd=where, extra_env={"WARM_TEST": "42"})
    # the variable the server's import set reaches the command too, as a cold run's import would have set it; the
    # command's own working directory is first on its path, as `python -m` puts it
    assert res.stdout.split() == ["42", str(where), "yes", str(where)]
    assert server("upper", input="hello").stdout == "HELLO"


def test_exit_codes_come_back_and_a_crash_keeps_its_traceback(server):
    assert server("exit", "3").returncode == 3
    res = server("raise")
    assert res.returncode == 1 and "RuntimeError: boom" in res.stderr


def test_a_client_whose_import_time_environment_differs_runs_cold(server):
    res = server("--version", extra_env={"HF_HOME": "/somewhere/else"})
    # cold is `python -m scdpo.cli`, not the server's target
    assert res.returncode == 0 and res.stdout.startswith("scdpo ")
    assert "differs from the server's in HF_HOME; running cold" in res.stderr
    assert server("--version").stdout == "warm target\n"  # the same arguments, warm


def test_ctrl_c_at_the_client_interrupts_the_command(server, tmp_path):
    # SIGINT as a terminal's foreground process has it (pytest-xdist's workers ignore it, and so would their children)
    client = server("sleep", str(tmp_path / "pid"), popen=True,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert client.stdout.readline() == "sleeping\n"
    client.send_signal(signal.SIGINT)
    out, _ = client.communicate(timeout=30)
    assert (client.returncode, out) == (130, "interrupted\n")


def test_a_client_that_ignores_ctrl_c_runs_a_command_that_ignores_it(server, tmp_path):
    # a shell's background job (`scdpo ... &`) ignores SIGINT; run cold, the command would ignore it too
    client = server("sleep", str(tmp_path / "pid"), popen=True,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert client.stdout.readline() == "sleeping\n"
    command = int((tmp_path / "pid").read_text())
    os.kill(command, signal.SIGINT)
    time.sleep(0.5)
    assert client.poll() is None and not _wait_gone(command, timeout=0.1)
    client.terminate()  # SIGTERM: the command goes with the client
    client.wait(timeout=30)
    assert _wait_gone(command)


def test_a_killed_client_takes_its_command_with_it(server, tmp_path):
    client = server("sleep", str(tmp_path / "pid"), popen=True)
    assert client.stdout.readline() == "sleeping\n"
    command = int((tmp_path / "pid").read_text())
    client.kill()
    client.wait(timeout=30)
    assert _wait_gone(command)


def test_concurrent_commands_each_get_their_own_exit_code(server):
    clients = [server("exit", str(code), popen=True) for code in (0, 4, 7)]
    assert [c.wait(timeout=30) for c in clients] == [0, 4, 7]


def test_stop_and_idle_exit_remove_the_socket(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for extra, stop in (([], True), (["--idle-exit", "0.2"], False)):
        sock = str(tmp_path / f"{stop}.sock")
        res = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "start", sock, "--preload", "json", *extra],
                             env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        if stop:
            assert warm.stop(sock)
        assert _wait_gone(int(res.stdout)) and not os.path.exists(sock)
    assert not warm.stop(sock)  # nobody answers now


def test_scdpo_commands_run_warm_with_their_own_errors(tmp_path):
    sock = str(tmp_path / "s.sock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "start", sock, "--preload", "scdpo.cli"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    try:
        run = [sys.executable, "-m", "scdpo.utils.warm", "run", sock, "--"]
        ok = subprocess.run([*run, "--version"], env=env, capture_output=True, text=True, timeout=60)
        assert (ok.returncode, ok.stdout.split()[0]) == (0, "scdpo")
        bad = subprocess.run([*run, "eval", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.startswith("scdpo: error: model path")
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        warm.stop(sock)


def test_bad_input_is_one_line_that_names_the_fix(tmp_path, capsys):
    assert warm.main(["run", "--wait", "0", str(tmp_path / "none.sock"), "--", "--version"]) == 2
    err = capsys.readouterr().err
    assert "no warm scdpo server at" in err and "python -m scdpo.utils.warm start" in err and err.count("\n") == 1
    assert warm.main(["start", "/tmp/" + "x" * 120]) == 2
    err = capsys.readouterr().err
    assert "over the 107 a Unix socket allows: use a shorter one" in err and err.count("\n") == 1
    missing = str(tmp_path / "no" / "such" / "s.sock")  # (in a subprocess: `start` forks its caller)
    res = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "start", missing, "--preload", "json", "--log",
                          str(tmp_path / "log")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 2 and f"cannot serve at {missing}: FileNotFoundError" in res.stderr
    assert res.stderr.count("\n") == 1


def test_import_time_variables_and_the_replayed_environment():
    server = {"PATH": "/bin", "HF_HOME": "/h", "TORCHINDUCTOR_X": "1"}
    assert warm_server.changed_import_vars(server, {**server, "PATH": "/usr/bin", "WARM_SOCKET": "s"}) == []
    assert warm_server.changed_import_vars(server, {"PATH": "/bin", "HF_HOME": "/g", "OMP_NUM_THREADS": "2"}) == [
        "HF_HOME", "OMP_NUM_THREADS", "TORCHINDUCTOR_X"]
    # the imports set A and removed B in the server; a client that had the server's values gets the same changes,
    # one that had its own keeps it
    set_by_imports = {"A": "set", "B": None}
    assert warm_server.child_environment({"B": "b"}, set_by_imports, {"B": "b", "C": "c"}) == {"A": "set", "C": "c"}
    assert warm_server.child_environment({"B": "b"}, set_by_imports, {"A": "mine", "B": "other"}) == {"A": "mine",
                                                                                             "B": "other"}


def test_exit_code_is_what_a_shell_reports():
    assert warm_server.exit_code(3 << 8) == 3
    assert warm_server.exit_code(signal.SIGTERM) == 128 + signal.SIGTERM


class FakeDriver:
    """ctypes.CDLL of a libcuda that answers ``code`` to cuDeviceGetCount (3: CUDA_ERROR_NOT_INITIALIZED)."""

    def __init__(self, code):
        self.code = code

    def __call__(self, path):
        assert path == "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
        return self

    def cuDeviceGetCount(self, _):
        return self.code


def test_the_cuda_check_tells_a_loaded_driver_from_an_initialised_one():
    maps = "7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libcuda.so.1\n"
    assert warm_server.cuda_driver_initialised(maps, FakeDriver(3)) is False  # loaded, cuInit never called
    assert warm_server.cuda_driver_initialised(maps, FakeDriver(0)) is True
    assert warm_server.cuda_driver_initialised("7f00-7f10 r-xp 0 0 1 /usr/lib/libc.so.6\n", FakeDriver(0)) is False
    assert warm_server.cuda_driver_initialised() is False  # this CPU process


def test_a_command_holds_only_its_own_descriptors(server):
    # 0-2 are the client's; the one more is listdir's own handle on /proc/self/fd: nothing of the server's leaks
    assert len(server("fds").stdout.split()) <= 4


def test_a_bad_client_neither_stops_nor_kills_the_server(server):
    import socket

    for payload in (b"\x00\x00\x00\x05[1,2]", b"\x00\x00\x00\x02{}", b"not json at all", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(server.socket)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.recv(1024)
    assert server("echo", "still here").stdout == "still here\n"


def test_a_path_that_is_not_a_socket_is_refused_and_kept(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    res = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "start", str(notes), "--preload", "json"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 2 and "exists and is not a socket: choose another path" in res.stderr
    assert notes.read_text() == "mine"


def test_with_no_server_a_command_can_run_cold(tmp_path):
    res = subprocess.run([sys.executable, "-m", "scdpo.utils.warm", "run", "--wait", "0", "--cold-if-absent",
                          str(tmp_path / "gone.sock"), "--", "--version"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0 and res.stdout.startswith("scdpo ") and "no server at" in res.stderr
