"""Warm starts (scdpo.utils.warm): commands forked from one server get the client's arguments, streams, working
directory and environment, return their exit codes, are interrupted with the client, and run cold when the
environment differs in what libraries read at import."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from scdpo.utils import warm, warm_protocol, warm_server

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
    elif cmd == "has":  # which of these modules this process has imported, and the variables they set
        names = argv[1:]
        print(*["yes" if m in sys.modules else "no" for m in names], *[os.environ.get(m.upper(), "-") for m in names])
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
# imported by the server after it listens: says it has started, waits for its gate file (so a test knows where the
# server is), then sets a variable, as a later module of the real preload may
GATED = """import os, time
open({gate!r} + ".started", "w").close()
deadline = time.monotonic() + 30
while not os.path.exists({gate!r}) and time.monotonic() < deadline:
    time.sleep(0.01)
os.environ[{var!r}] = "imported"
"""
# `python -m scdpo.utils.warm` whose server takes the import of a module named warm_cuda for the CUDA driver's start
FAKE_CUDA = ("import sys; from scdpo.utils import warm, warm_server; "
             "warm_server.cuda_driver_initialised = lambda: 'warm_cuda' in sys.modules; "
             "sys.exit(warm.main(sys.argv[1:]))")


def _start(tmp_path, *args, fake_cuda=False):
    """A server of warm_target.main (the command), started with ``args``: (its socket, the clients' environment,
    its PID)."""
    (tmp_path / "warm_target.py").write_text(TARGET)
    (tmp_path / "warm_preloaded.py").write_text(PRELOADED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    sock = str(tmp_path / "s.sock")
    start = subprocess.run([sys.executable, *(["-c", FAKE_CUDA] if fake_cuda else ["-m", "scdpo.utils.warm"]), "start",
                            sock, "--target", "warm_target:main", "--idle-exit", "60", *args], env=env,
                           capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    return sock, env, int(start.stdout)


def _gated(tmp_path, name):
    """Module ``name`` (GATED, setting the variable NAME): its gate, which lets its import end once created."""
    gate = tmp_path / f"{name}.gate"
    (tmp_path / f"{name}.py").write_text(GATED.format(gate=str(gate), var=name.upper()))
    return gate


def _request(sock, env, out, *argv):
    """What `warm run` sends, from this process, so the test knows it waits: ``argv`` with stdout and stderr to the
    file ``out``. Returns the connection, whose next message is the exit code."""
    conn = warm_protocol.connect(sock, 10)
    with open(os.devnull) as null, open(out, "w") as f:
        warm_protocol.send(conn, {"op": "run", "argv": list(argv), "cwd": os.getcwd(), "env": env},
                           [null.fileno(), f.fileno(), f.fileno()])
    return conn


def _wait_for(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def server(tmp_path):
    """A server preloading a module that sets a variable, its commands run by warm_target.main; yields a function
    that runs a client and returns the CompletedProcess."""
    sock, env, pid = _start(tmp_path, "--preload", "warm_preloaded")

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


def test_the_server_listens_before_its_later_imports_and_forks_between_them(tmp_path):
    first, slow = _gated(tmp_path, "warm_first"), _gated(tmp_path, "warm_slow")
    sock, env, pid = _start(tmp_path, "--preload", "warm_preloaded", "warm_first", "warm_slow", "--listen-after", "1")
    try:
        # it listens while warm_first imports: a request waits for that one import, then goes before warm_slow
        conn = _request(sock, env, tmp_path / "out", "has", "warm_first", "warm_slow")
        first.touch()
        # the command ends while warm_slow's import still waits for its gate: it has neither that module nor what
        # it sets (it would import it itself, as a cold command does)
        assert _wait_for(lambda: (tmp_path / "out").read_text().endswith("\n"))
        assert (tmp_path / "out").read_text() == "yes no imported -\n"
        slow.touch()
        assert warm_protocol.receive(conn)[0] == {"rc": 0}
        conn.close()
    finally:
        slow.touch()
        warm.stop(sock)
    assert _wait_gone(pid) and not os.path.exists(sock)


def test_a_command_forked_after_a_later_import_gets_what_it_set(tmp_path):
    _gated(tmp_path, "warm_late").touch()
    sock, env, pid = _start(tmp_path, "--preload", "warm_preloaded", "warm_late", "no_such_module_xyz",
                            "--listen-after", "1")
    try:
        run = [sys.executable, "-m", "scdpo.utils.warm", "run", sock, "--", "has", "warm_late",
               "PYTORCH_NVML_BASED_CUDA_CHECK"]
        # forked after warm_late's import (a request waits for the one in progress); the import-time NVML switch is
        # the server's own, never the command's
        res = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stdout) == (0, "yes no imported -\n")
        # the replay rule holds: a client that had its own value keeps it
        res = subprocess.run(run, env={**env, "WARM_LATE": "mine"}, capture_output=True, text=True, timeout=60)
        assert res.stdout == "yes no mine -\n"
        # the module that fails is named once the imports are done
        log = tmp_path / "s.sock.log"
        assert _wait_for(lambda: "not preloaded" in log.read_text())
        assert "no_such_module_xyz (ModuleNotFoundError" in log.read_text()
    finally:
        warm.stop(sock)
    assert _wait_gone(pid)


def test_an_import_that_starts_the_cuda_driver_stops_the_server_but_not_its_commands(tmp_path):
    first, cuda = _gated(tmp_path, "warm_first"), _gated(tmp_path, "warm_cuda")
    sock, env, pid = _start(tmp_path, "--preload", "warm_preloaded", "warm_first", "warm_cuda", "--listen-after", "1",
                            fake_cuda=True)
    try:
        running = _request(sock, env, tmp_path / "out", "sleep", str(tmp_path / "pid"))
        first.touch()
        assert _wait_for(lambda: (tmp_path / "out").read_text() == "sleeping\n")  # forked before warm_cuda
        assert _wait_for(lambda: os.path.exists(f"{cuda}.started"))
        waiting = _request(sock, env, tmp_path / "out2", "echo", "late")  # connected while warm_cuda imports
        cuda.touch()
        # the request that waited is told why (its client runs cold, as with no server); nobody can connect now
        assert "importing warm_cuda initialised the CUDA driver" in warm_protocol.receive(waiting)[0]["gone"]
        assert _wait_for(lambda: not os.path.exists(sock))
        log = (tmp_path / "s.sock.log").read_text()
        assert log.count("\n") == 1 and "stopped serving: importing warm_cuda initialised the CUDA driver" in log
        # the running command goes on, and ends with its own exit code (Ctrl-C at its client); then the server exits
        assert not _wait_gone(int((tmp_path / "pid").read_text()), timeout=0.1)
        running.send(b"i")
        assert warm_protocol.receive(running)[0] == {"rc": 130}
        assert _wait_gone(pid)
    finally:
        for gate in (first, cuda):
            gate.touch()
        warm.stop(sock)
    # before listening, the same import is a start that fails, with the reason
    res = subprocess.run([sys.executable, "-c", FAKE_CUDA, "start", str(tmp_path / "t.sock"), "--preload",
                          "warm_cuda"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "importing warm_cuda initialised the CUDA driver" in res.stderr


def test_a_client_that_connects_as_the_server_stops_is_told_so_not_reset(tmp_path):
    """A stop request and then a command wait while the server imports (a gate holds the import): the server takes
    the stop, removes its socket and answers the command that connected before with why (its client then runs cold
    with --cold-if-absent), where it used to close the listener under it (a connection reset: exit code 2)."""
    gate = _gated(tmp_path, "warm_first")
    sock, env, pid = _start(tmp_path, "--preload", "warm_preloaded", "warm_first", "--listen-after", "1")
    try:
        assert _wait_for(lambda: os.path.exists(f"{gate}.started"))
        with warm_protocol.connect(sock, 10) as stopper:
            warm_protocol.send(stopper, {"op": "stop"})
        late = _request(sock, env, tmp_path / "out", "echo", "late")  # behind the stop in the listener's queue
        gate.touch()
        assert warm_protocol.receive(late)[0] == {"gone": "it was stopped (stop)"}
        assert _wait_gone(pid) and not os.path.exists(sock) and not (tmp_path / "out").read_text()
    finally:
        gate.touch()
        warm.stop(sock)


def test_a_client_whose_server_stopped_serving_runs_as_with_none(tmp_path, capsys):
    sock = str(tmp_path / "g.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(1)

    def gone():  # a server that stopped serving while the request waited
        conn, _ = listener.accept()
        _, fds = warm_protocol.receive(conn, max_fds=3)
        for fd in fds:
            os.close(fd)
        warm_protocol.send(conn, {"gone": "importing x initialised the CUDA driver"})
        conn.close()
    thread = threading.Thread(target=gone)
    thread.start()
    assert warm.main(["run", sock, "--", "--version"]) == 2
    thread.join()
    listener.close()
    err = capsys.readouterr().err
    assert "stopped serving: importing x initialised the CUDA driver" in err and err.count("\n") == 1


def test_listen_after_is_parsed_and_checked(monkeypatch, capsys, tmp_path):
    # the default listens once `scdpo cost train`'s modules are in, the pipeline's first command
    first = warm_protocol.PRELOAD[:warm_protocol.PRELOAD_FIRST]
    assert {"torch", "scdpo.cli", "scdpo.cost.train"} <= set(first)
    assert not any(m.startswith("diffusers") for m in first)
    assert warm.main(["start", str(tmp_path / "s.sock"), "--listen-after", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--listen-after -1: give a number of modules, 0 or more" in err and err.count("\n") == 1
    calls = []
    monkeypatch.setattr(warm, "start", lambda *a, **k: calls.append(k["listen_after"]) or 1)
    for args in ([], ["--listen-after", "0"], ["--listen-after", "3"]):
        assert warm.main(["start", "s.sock", *args]) == 0
    assert calls == [warm_protocol.PRELOAD_FIRST, 0, 3]
